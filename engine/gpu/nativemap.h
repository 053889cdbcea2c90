// nativemap.h: nativemap.c's entry, for nativemap.go.
#ifndef WICK_NATIVEMAP_H
#define WICK_NATIVEMAP_H
#include <stdint.h>
#include <stddef.h>

typedef struct {
	uint32_t type; // WGPUErrorType: 0 none
	char message[512];
} wick_map_error;

void wick_map_read(void *device, void *buffer, size_t offset, size_t size, uintptr_t id, wick_map_error *e);

#endif
