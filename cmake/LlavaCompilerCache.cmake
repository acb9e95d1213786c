# Use ccache when it is installed. Precompiled headers need the sloppiness settings below,
# and a base dir makes the cache hit across clones of the repository (CI builds a fresh clone).
find_program(LLAVA_CCACHE ccache)
if(LLAVA_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}
      CCACHE_NOHASHDIR=1
      ${LLAVA_CCACHE})
  message(STATUS "llava-train: compiling through ccache (${LLAVA_CCACHE})")
endif()
