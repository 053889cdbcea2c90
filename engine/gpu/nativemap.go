//go:build !js && !wasip1

package gpu

/*
#include "nativemap.h"
*/
import "C"

import (
	"errors"
	"sync"
	"unsafe"

	"github.com/cogentcore/webgpu/wgpu"
)

// cogentcore/webgpu v0.23.0's Buffer.MapAsync hands wgpu-native the
// address of a local variable holding its callback's cgo.Handle as the
// callback's userdata. The variable escapes to the heap and nothing keeps
// it alive after MapAsync returns, so a map still pending when the
// garbage collector runs (a prefix cache snapshot's readback, out while a
// reply's first token is drawn) can call back through freed memory:
// "runtime/cgo: misuse of an invalid Handle", a crash of the process.
// mapRead calls wgpuBufferMapAsync itself, with an id as the userdata
// (a number, which nothing can free), and looks the map up by it.

var (
	mapMu   sync.Mutex
	mapNext uintptr = 1
	mapsOut         = map[uintptr]*pendingMap{}
)

//export wickMapDone
func wickMapDone(status C.uint32_t, id C.uintptr_t) {
	mapMu.Lock()
	pm := mapsOut[uintptr(id)]
	delete(mapsOut, uintptr(id))
	mapMu.Unlock()
	if pm != nil {
		pm.status, pm.finished = wgpu.BufferMapAsyncStatus(status), true
	}
}

// The leading fields of cogentcore/webgpu v0.23.0's wgpu.Device and
// wgpu.Buffer (unexported there): the C handles mapRead passes on.
type (
	wgpuDeviceFields struct{ ref unsafe.Pointer }
	wgpuBufferFields struct{ deviceRef, ref unsafe.Pointer }
)

// mapRead starts reading pm's range of its buffer back; Poll finishes it.
func mapRead(dev *wgpu.Device, pm *pendingMap) error {
	d := (*wgpuDeviceFields)(unsafe.Pointer(dev)).ref
	b := (*wgpuBufferFields)(unsafe.Pointer(pm.buf)).ref
	mapMu.Lock()
	id := mapNext
	mapNext++
	mapsOut[id] = pm
	mapMu.Unlock()
	var e C.wick_map_error
	C.wick_map_read(d, b, C.size_t(pm.offset), C.size_t(pm.size), C.uintptr_t(id), &e)
	if e._type != 0 {
		mapMu.Lock()
		delete(mapsOut, id)
		mapMu.Unlock()
		return errors.New(C.GoString(&e.message[0]))
	}
	return nil
}
