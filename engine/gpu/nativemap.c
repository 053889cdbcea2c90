//go:build !js && !wasip1

// nativemap.c: wgpuBufferMapAsync with an integer as its userdata (see
// nativemap.go for why cogentcore/webgpu's MapAsync is not used). The
// types are wgpu-native's webgpu.h (the version cogentcore/webgpu v0.23.0
// bundles), declared here because that header's path is in the module
// cache: opaque handles, and enums and flags of 32 bits.

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "_cgo_export.h"
#include "nativemap.h"

typedef struct WGPUDeviceImpl *WGPUDevice;
typedef struct WGPUBufferImpl *WGPUBuffer;
typedef void (*WGPUBufferMapAsyncCallback)(uint32_t status, void *userdata);
typedef void (*WGPUErrorCallback)(uint32_t type, char const *message, void *userdata);

void wgpuBufferMapAsync(WGPUBuffer buffer, uint32_t mode, size_t offset, size_t size, WGPUBufferMapAsyncCallback callback, void *userdata);
void wgpuDevicePushErrorScope(WGPUDevice device, uint32_t filter);
void wgpuDevicePopErrorScope(WGPUDevice device, WGPUErrorCallback callback, void *userdata);

enum { wickMapModeRead = 1, wickErrorFilterValidation = 0 };

static void wick_map_done_c(uint32_t status, void *userdata) {
	wickMapDone(status, (uintptr_t)userdata);
}

static void wick_scope_c(uint32_t type, char const *message, void *userdata) {
	wick_map_error *e = userdata;
	e->type = type;
	e->message[0] = 0;
	if (message) {
		strncpy(e->message, message, sizeof e->message - 1);
		e->message[sizeof e->message - 1] = 0;
	}
}

void wick_map_read(void *device, void *buffer, size_t offset, size_t size, uintptr_t id, wick_map_error *e) {
	e->type = 0;
	e->message[0] = 0;
	wgpuDevicePushErrorScope(device, wickErrorFilterValidation);
	wgpuBufferMapAsync(buffer, wickMapModeRead, offset, size, wick_map_done_c, (void *)id);
	wgpuDevicePopErrorScope(device, wick_scope_c, e);
}
