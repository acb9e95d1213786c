# Third-party libraries, all from Debian packages (scripts/setup.sh installs them).
# Each becomes an imported target llava::<name> so the rest of the build never sees raw paths.
find_package(PkgConfig QUIET)
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)

# llava_import_library(NAME PKG HEADER LIB...): llava::NAME from pkg-config's PKG where pkg-config exists,
# else from HEADER and the LIBs found on CMAKE_PREFIX_PATH (machines without pkg-config, unpacked prefixes).
function(llava_import_library name pkg header)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(LLAVA_PC_${name} QUIET IMPORTED_TARGET ${pkg})
  endif()
  if(LLAVA_PC_${name}_FOUND)
    add_library(llava::${name} ALIAS PkgConfig::LLAVA_PC_${name})
    return()
  endif()
  find_path(LLAVA_${name}_INCLUDE_DIR ${header})
  if(NOT LLAVA_${name}_INCLUDE_DIR)
    message(FATAL_ERROR "llava-train needs ${pkg} (${header}): run scripts/setup.sh, or point CMAKE_PREFIX_PATH "
                        "at a prefix that has it")
  endif()
  add_library(llava_found_${name} INTERFACE)
  target_include_directories(llava_found_${name} INTERFACE ${LLAVA_${name}_INCLUDE_DIR})
  foreach(lib ${ARGN})
    find_library(LLAVA_${name}_${lib}_LIBRARY ${lib})
    if(NOT LLAVA_${name}_${lib}_LIBRARY)
      message(FATAL_ERROR "llava-train needs ${pkg} (lib${lib}): run scripts/setup.sh, or point CMAKE_PREFIX_PATH "
                          "at a prefix that has it")
    endif()
    target_link_libraries(llava_found_${name} INTERFACE ${LLAVA_${name}_${lib}_LIBRARY})
  endforeach()
  add_library(llava::${name} ALIAS llava_found_${name})
endfunction()

llava_import_library(sentencepiece sentencepiece sentencepiece_processor.h sentencepiece sentencepiece_train)
llava_import_library(turbojpeg libturbojpeg turbojpeg.h turbojpeg)
# The other image formats PIL opens (src/image): PNG, WebP (+ demux for animated files), TIFF, GIF.
llava_import_library(png libpng png.h png16)
llava_import_library(webp libwebp webp/decode.h webp)
llava_import_library(webpdemux libwebpdemux webp/demux.h webpdemux)
llava_import_library(tiff libtiff-4 tiffio.h tiff)
llava_import_library(gif giflib gif_lib.h gif)  # Debian's giflib 5.2.1 ships no .pc: found by header
# Byte-level BPE tokenizer: PCRE2 (pre-tokenizer regex, JIT), utf8proc (NFC); simdjson (tokenizer.json and the
# data index, On-Demand API).
llava_import_library(pcre2 libpcre2-8 pcre2.h pcre2-8)
llava_import_library(utf8proc libutf8proc utf8proc.h utf8proc)
llava_import_library(simdjson simdjson simdjson.h simdjson)

# libstb-dev ships the headers under include/stb and a compiled libstb.so with the implementations.
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)
find_library(STB_LIBRARY stb REQUIRED)
add_library(llava_stb INTERFACE)
target_include_directories(llava_stb INTERFACE ${STB_INCLUDE_DIR})
target_link_libraries(llava_stb INTERFACE ${STB_LIBRARY})
add_library(llava::stb ALIAS llava_stb)

find_path(CXXOPTS_INCLUDE_DIR cxxopts.hpp REQUIRED)
add_library(llava_cxxopts INTERFACE)
target_include_directories(llava_cxxopts INTERFACE ${CXXOPTS_INCLUDE_DIR})
add_library(llava::cxxopts ALIAS llava_cxxopts)

find_package(yaml-cpp REQUIRED)
add_library(llava_yaml INTERFACE)
if(TARGET yaml-cpp::yaml-cpp)
  target_link_libraries(llava_yaml INTERFACE yaml-cpp::yaml-cpp)
else()
  target_include_directories(llava_yaml INTERFACE ${YAML_CPP_INCLUDE_DIR})
  target_link_libraries(llava_yaml INTERFACE ${YAML_CPP_LIBRARIES})
endif()
add_library(llava::yaml-cpp ALIAS llava_yaml)
