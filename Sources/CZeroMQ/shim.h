// libzmq (Debian: libzmq3-dev). Only the Transport module's ZeroMQ wrapper imports this.
#include <zmq.h>
