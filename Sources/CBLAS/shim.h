// OpenBLAS's CBLAS interface (Debian: libopenblas-dev). The core uses sgemm for every matrix product
// with more than one row and pins OpenBLAS to one thread: the core's own pool owns parallelism.
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
