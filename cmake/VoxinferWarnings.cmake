# Project warnings (errors with VOXINFER_WERROR, as CI builds) and sanitizers.
include_guard(GLOBAL)

function(voxinfer_set_warnings target)
  # -Wno-restrict: GCC 12 reports false positives inside std::string at -O3 (GCC bug 105329).
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)
  if(VOXINFER_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

if(VOXINFER_SANITIZE)
  add_compile_options(-fsanitize=${VOXINFER_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${VOXINFER_SANITIZE})
endif()
