# LibTorch discovery, in this order:
#   1. what the user names: -DTorch_DIR, CMAKE_PREFIX_PATH, or $LIBTORCH (an unzipped pytorch.org LibTorch);
#   2. a python3 that has torch (torch.utils.cmake_prefix_path);
#   3. the system package (Debian's libtorch-dev).
# Afterwards llava_use_torch(target) links torch and reuses one precompiled <torch/torch.h>.
if(DEFINED ENV{LIBTORCH} AND NOT Torch_DIR)
  list(PREPEND CMAKE_PREFIX_PATH "$ENV{LIBTORCH}")
endif()

if(Torch_DIR OR DEFINED ENV{LIBTORCH} OR CMAKE_PREFIX_PATH)
  find_package(Torch QUIET)
endif()

if(NOT Torch_FOUND)
  foreach(_py python3 /usr/bin/python3)
    execute_process(COMMAND ${_py} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _py_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE _py_rc ERROR_QUIET)
    if(_py_rc EQUAL 0 AND EXISTS "${_py_prefix}/Torch/TorchConfig.cmake")
      find_package(Torch QUIET PATHS "${_py_prefix}" NO_DEFAULT_PATH)
      if(Torch_FOUND)
        break()
      endif()
    endif()
  endforeach()
endif()

if(NOT Torch_FOUND)
  find_package(Torch REQUIRED)
endif()
# Torch_DIR is cached after the first configure, so name the source by where it points.
if(Torch_DIR MATCHES "^/usr/(lib|share)/")
  set(_llava_torch_source "system package")
elseif(Torch_DIR MATCHES "(site|dist)-packages/torch")
  set(_llava_torch_source "python torch")
else()
  set(_llava_torch_source "user-given path")
endif()

# CUDA-only code (NCCL process group, CUDA tests) compiles only where Torch has CUDA.
set(LLAVA_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR CAFFE2_USE_CUDA OR TORCH_CUDA_LIBRARIES)
  set(LLAVA_TORCH_HAS_CUDA ON)
endif()
message(STATUS "llava-train: LibTorch ${Torch_VERSION} from ${_llava_torch_source} (${Torch_DIR}), CUDA: ${LLAVA_TORCH_HAS_CUDA}")

# ProcessGroupNCCL's header includes <nccl.h>, which LibTorch does not ship: pip's torch has it in the
# nvidia-nccl wheel beside it (site-packages/nvidia/nccl/include or nvidia/cu13/include), a system install
# in the CUDA toolkit's or NCCL's include folder. Without it the NCCL process group is left out of the build.
set(LLAVA_NCCL_INCLUDE_DIR "")
if(LLAVA_TORCH_HAS_CUDA)
  get_filename_component(_llava_site "${Torch_DIR}/../../../.." ABSOLUTE)  # .../site-packages (pip torch)
  file(GLOB _llava_nccl_hints "${_llava_site}/nvidia/*/include")
  find_path(NCCL_INCLUDE_DIR nccl.h
            HINTS $ENV{NCCL_ROOT}/include $ENV{NCCL_HOME}/include ${_llava_nccl_hints} ${CUDAToolkit_INCLUDE_DIRS})
  if(NCCL_INCLUDE_DIR)
    set(LLAVA_NCCL_INCLUDE_DIR "${NCCL_INCLUDE_DIR}")
    message(STATUS "llava-train: nccl.h in ${NCCL_INCLUDE_DIR}")
  else()
    message(WARNING "llava-train: LibTorch has CUDA but nccl.h was not found (set NCCL_ROOT): "
                    "--ddp_backend nccl will be unavailable")
  endif()
endif()

# c10d's Gloo headers include <gloo/...> from libgloo-dev on Debian; pytorch.org's LibTorch bundles them.
find_path(GLOO_INCLUDE_DIR gloo/config.h)

# One precompiled header for every target that includes torch: a 2-core build spends most of its
# time parsing <torch/torch.h>, so parse it once.
add_library(llava_torch_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/torch_pch.cpp)
target_link_libraries(llava_torch_pch PUBLIC ${TORCH_LIBRARIES})
target_precompile_headers(llava_torch_pch PRIVATE <torch/torch.h>)
set_property(TARGET llava_torch_pch PROPERTY CXX_STANDARD 17)

function(llava_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  if(GLOO_INCLUDE_DIR)
    target_include_directories(${target} PUBLIC ${GLOO_INCLUDE_DIR})
  endif()
  target_compile_definitions(${target} PUBLIC LLAVA_TORCH_HAS_CUDA=$<BOOL:${LLAVA_TORCH_HAS_CUDA}>)
  target_precompile_headers(${target} REUSE_FROM llava_torch_pch)
endfunction()
target_compile_definitions(llava_torch_pch PUBLIC LLAVA_TORCH_HAS_CUDA=$<BOOL:${LLAVA_TORCH_HAS_CUDA}>)
if(GLOO_INCLUDE_DIR)
  target_include_directories(llava_torch_pch PUBLIC ${GLOO_INCLUDE_DIR})
endif()
