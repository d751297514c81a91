# The one place that gives ISA-specific sources their own compile flags. The rest of
# the library is built for baseline x86-64 so that it runs on any x86-64 machine;
# the right kernels are chosen at run time from cpuid (see core/cpu.h).
include_guard(GLOBAL)

set(VOXINFER_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c)
set(VOXINFER_ISA_FLAGS_avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c)

# voxinfer_isa_sources(<target> <isa> <sources...>): add sources compiled with that ISA's flags only.
function(voxinfer_isa_sources target isa)
  if(NOT DEFINED VOXINFER_ISA_FLAGS_${isa})
    message(FATAL_ERROR "voxinfer_isa_sources: unknown ISA '${isa}'")
  endif()
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    return()
  endif()
  target_sources(${target} PRIVATE ${ARGN})
  # TARGET_DIRECTORY: the target is usually created in a parent directory (src/), and a
  # source property set here would otherwise stay invisible to it.
  set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES COMPILE_OPTIONS "${VOXINFER_ISA_FLAGS_${isa}}")
endfunction()
