// Replays a vgpu memory trace ("# vgpu-trace v1": "a ID SIZE" / "f ID" lines)
// with cudaMalloc/cudaFree, the baseline for `vgpu memory replay --backing cuda`
// and for PyTorch's caching allocator on the same trace.
//
//   replay_cudamalloc TRACE
//
// Prints {"events": E, "ns_per_op": X, "failures": F}.
#include "common.cuh"

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

struct Event {
  bool allocate;
  unsigned long long id;
  unsigned long long size;
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: replay_cudamalloc TRACE\n");
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) {
    std::fprintf(stderr, "replay_cudamalloc: cannot read %s\n", argv[1]);
    return 2;
  }
  std::vector<Event> events;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    char op = 0;
    Event e{};
    fields >> op >> e.id;
    e.allocate = op == 'a';
    if (e.allocate) fields >> e.size;
    events.push_back(e);
  }
  require_device();
  std::unordered_map<unsigned long long, void*> live;
  live.reserve(events.size());
  long failures = 0;
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (const Event& e : events) {
    if (e.allocate) {
      void* p = nullptr;
      if (cudaMalloc(&p, e.size) != cudaSuccess) {
        cudaGetLastError();
        ++failures;
        continue;
      }
      live[e.id] = p;
    } else if (auto it = live.find(e.id); it != live.end()) {
      CHECK_CUDA(cudaFree(it->second));
      live.erase(it);
    }
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count() / events.size();
  for (auto& [id, p] : live) CHECK_CUDA(cudaFree(p));
  emit("{\"events\": " + std::to_string(events.size()) + ", \"ns_per_op\": " + std::to_string(ns) +
       ", \"failures\": " + std::to_string(failures) + "}");
  return 0;
}
