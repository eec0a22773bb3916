// libzmq (Debian: libzmq3-dev), and eventfd, which the poll loop polls beside its sockets to be woken
// by other threads. Only the Transport module imports this.
#include <zmq.h>
#include <sys/eventfd.h>
