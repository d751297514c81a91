# Installs the library, its public headers and a CMake package config so that
# find_package(voxinfer) gives voxinfer::voxinfer.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Installed programs find the installed library relative to themselves, so an install under
# any prefix runs without LD_LIBRARY_PATH.
file(RELATIVE_PATH _voxinfer_bin_to_lib "${CMAKE_INSTALL_FULL_BINDIR}" "${CMAKE_INSTALL_FULL_LIBDIR}")
if(TARGET voxinfer_cli)
  set_target_properties(voxinfer_cli PROPERTIES INSTALL_RPATH "$ORIGIN/${_voxinfer_bin_to_lib}")
endif()

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
