#define _GNU_SOURCE
#include <dlfcn.h>
#include "ckernels.h"

int rlhf_blas_stop_server_threads(void) {
    // Looked up at run time: OpenBLAS's threaded builds (pthread, OpenMP) export it, a serial build
    // has no server threads and no such symbol.
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    return shutdown ? shutdown() : -1;
}
