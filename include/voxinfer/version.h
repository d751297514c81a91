// voxinfer's version.
#pragma once

#define VOXINFER_VERSION_MAJOR 0
#define VOXINFER_VERSION_MINOR 1
#define VOXINFER_VERSION_PATCH 0
#define VOXINFER_VERSION_STRING "0.1.0"
