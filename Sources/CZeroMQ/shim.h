// libzmq (Debian: libzmq3-dev), and eventfd, which the poll loop polls beside its sockets to be woken
// by other threads. Only the Transport module imports this.
#include <zmq.h>
#include <sys/eventfd.h>

// Thread affinity for the transport benchmark (threads a thread creates inherit its CPU mask), through
// the raw system calls: the glibc wrappers and CPU_SET need _GNU_SOURCE, which a module header cannot set.
#include <sys/syscall.h>
#include <unistd.h>
#include <string.h>

/// Bytes of a saved CPU mask (1024 CPUs).
static inline size_t rlhf_cpu_set_size(void) { return 128; }

/// Saves the calling thread's CPU mask into `saved` (rlhf_cpu_set_size() bytes), then pins the thread to
/// `cpu`. Returns 0 on success.
static inline int rlhf_pin_thread(int cpu, void *saved) {
    if (cpu < 0 || cpu >= 1024) return -1;
    if (syscall(SYS_sched_getaffinity, 0, rlhf_cpu_set_size(), saved) < 0) return -1;
    unsigned long one[128 / sizeof(unsigned long)];
    memset(one, 0, sizeof one);
    one[cpu / (8 * sizeof(unsigned long))] = 1UL << (cpu % (8 * sizeof(unsigned long)));
    return syscall(SYS_sched_setaffinity, 0, sizeof one, one) < 0 ? -1 : 0;
}

/// Restores a mask saved by rlhf_pin_thread.
static inline int rlhf_restore_thread(const void *saved) {
    return syscall(SYS_sched_setaffinity, 0, rlhf_cpu_set_size(), saved) < 0 ? -1 : 0;
}
