// OpenBLAS's CBLAS interface (Debian: libopenblas-dev). The core uses sgemm for every matrix product
// with more than one row and pins OpenBLAS to one thread: the core's own pool owns parallelism.
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
/// The kernel set OpenBLAS chose when it was loaded (DYNAMIC_ARCH builds pick it from CPUID, or from
/// OPENBLAS_CORETYPE), e.g. "SkylakeX", "Haswell", "Prescott".
char *openblas_get_corename(void);
/// The library's build line: version, build options, core.
char *openblas_get_config(void);
