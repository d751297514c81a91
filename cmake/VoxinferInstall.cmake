# Installs the library, its public headers and a CMake package config so that
# find_package(voxinfer) gives voxinfer::voxinfer.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS voxinfer EXPORT voxinferTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/voxinfer DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT voxinferTargets NAMESPACE voxinfer:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/voxinfer)
configure_package_config_file(cmake/voxinferConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/voxinferConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/voxinfer)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/voxinferConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/voxinferConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/voxinferConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/voxinfer)
if(TARGET voxinfer_cli)
  install(TARGETS voxinfer_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
