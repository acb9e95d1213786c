# Third-party libraries, all from Debian packages (scripts/setup.sh installs them).
# Each becomes an imported target llava::<name> so the rest of the build never sees raw paths.
find_package(PkgConfig REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)

pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
add_library(llava::sentencepiece ALIAS PkgConfig::SENTENCEPIECE)

pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
add_library(llava::turbojpeg ALIAS PkgConfig::TURBOJPEG)

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
