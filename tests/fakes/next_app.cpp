// Prints what the first probe library finds with dlsym(RTLD_NEXT): 2 is right.
#include <cstdio>

extern "C" int vgpu_probe_next();

int main() {
  std::printf("next=%d\n", vgpu_probe_next());
  return 0;
}
