# One INTERFACE target carries every compile/link setting of our own targets:
# warnings (as errors unless VGPU_WERROR=OFF) and the ASan+UBSan switch.
# Third-party code never sees these flags. The shipped code (src/) also links
# vgpu_strict_settings: implicit narrowing and sign changes are errors there.
add_library(vgpu_settings INTERFACE)
target_compile_options(vgpu_settings INTERFACE
  $<BUILD_INTERFACE:-Wall;-Wextra;-Wpedantic;-Wshadow;-Wnon-virtual-dtor;-Wold-style-cast;-Wcast-align;-Wunused;-Woverloaded-virtual;-Wnull-dereference;-Wformat=2;-Wimplicit-fallthrough>
  $<BUILD_INTERFACE:$<$<BOOL:${VGPU_WERROR}>:-Werror>>
  # GCC 12 at -O3 reports std::string appends as overlapping memcpy (GCC bug 105651).
  $<BUILD_INTERFACE:$<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict>>
  $<BUILD_INTERFACE:$<$<BOOL:${VGPU_SANITIZE}>:-fsanitize=address,undefined;-fno-omit-frame-pointer;-fno-sanitize-recover=undefined>>)
target_link_options(vgpu_settings INTERFACE
  $<BUILD_INTERFACE:$<$<BOOL:${VGPU_SANITIZE}>:-fsanitize=address,undefined>>)
# ThreadSanitizer cannot be combined with ASan: a separate switch and preset.
target_compile_options(vgpu_settings INTERFACE
  $<BUILD_INTERFACE:$<$<BOOL:${VGPU_SANITIZE_THREAD}>:-fsanitize=thread;-fno-omit-frame-pointer>>)
target_link_options(vgpu_settings INTERFACE $<BUILD_INTERFACE:$<$<BOOL:${VGPU_SANITIZE_THREAD}>:-fsanitize=thread>>)

# Implicit conversions that may change a value or its sign, for the shipped code.
add_library(vgpu_strict_settings INTERFACE)
target_compile_options(vgpu_strict_settings INTERFACE $<BUILD_INTERFACE:-Wconversion;-Wsign-conversion>)
