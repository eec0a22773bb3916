import CZeroMQ
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The one thread of a process that owns its ZeroMQ sockets (sockets are not thread-safe). Other
/// threads hand it outgoing messages through a locked queue and wake it through an eventfd that it
/// polls beside the sockets; incoming messages go to each socket's handler on the loop thread.
/// Stopped explicitly with `shutdown()`, which closes every socket and terminates the context.
public final class PollLoop: @unchecked Sendable {
    /// Identifies a socket of this loop.
    public struct SocketID: Hashable, Sendable { let raw: Int }

    /// Called on the loop thread with each multipart message a socket receives.
    public typealias Handler = @Sendable ([[UInt8]]) -> Void

    /// Called on the loop thread with each connection or handshake event of a monitored socket.
    public typealias EventHandler = @Sendable (SocketEvent) -> Void

    private enum Command {
        case open(SocketID, SocketKind, SocketSettings, [UInt8]?, bind: [String], connect: [String], Handler, EventHandler?,
                  reply: @Sendable (Result<[String], Error>) -> Void)
        case send(SocketID, [[UInt8]], failure: (@Sendable (Error) -> Void)?)
        case close(SocketID)
        case job(UnownedJob)
    }

    private let context: ZMQContext
    private let queue = Mutex<[Command]>([])
    private let wakeFD: Int32
    private let stopping = Atomic<Bool>(false)
    private let nextID = Atomic<Int>(0)
    /// `pthread_self()` of the loop thread once it runs.
    private let loopThread = Atomic<UInt>(0)
    private let finished = DispatchSemaphore(value: 0)
    private var sockets: [SocketID: (socket: ZMQSocket, handler: Handler)] = [:] // loop thread only
    /// The PAIR socket reading each monitored socket's events (loop thread only).
    private var monitors: [SocketID: SocketID] = [:]

    /// Starts the loop thread.
    public init() throws {
        context = try ZMQContext()
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK))
        guard wakeFD >= 0 else { throw TransportError("eventfd") }
        let thread = Thread { [self] in self.run() }
        thread.name = "zmq-poll-loop"
        thread.start()
    }

    private func submit(_ command: Command) {
        queue.withLock { $0.append(command) }
        // The loop drains its queue until empty before it polls again: its own thread needs no wake-up.
        if isLoopThread { return }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Opens a socket on the loop thread, binds and connects it, and returns the endpoints bound
    /// (with `tcp://host:*` ports resolved). `handler` receives every message it gets, and `events`
    /// (when given) its connection and handshake events.
    public func open(_ kind: SocketKind, settings: SocketSettings = .default, identity: [UInt8]? = nil,
                     bind: [String] = [], connect: [String] = [], events: EventHandler? = nil,
                     handler: @escaping Handler) throws -> (SocketID, [String]) {
        let id = SocketID(raw: nextID.wrappingAdd(1, ordering: .relaxed).newValue)
        if isLoopThread {
            // Called from a handler or a task on this loop: waiting for the loop would wait forever.
            return (id, try openNow(id, kind, settings, identity, bind: bind, connect: connect, handler, events).get())
        }
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<[String], Error>?>(nil)
        submit(.open(id, kind, settings, identity, bind: bind, connect: connect, handler, events, reply: { r in
            result.withLock { $0 = r }
            done.signal()
        }))
        done.wait()
        let endpoints = try result.withLock { $0! }.get()
        return (id, endpoints)
    }

    /// Admits CURVE clients whose public key (Z85) is in `publicKeys`, for every CURVE server socket
    /// of this loop: a ZAP handler (RFC 27) on `inproc://zeromq.zap.01` in the loop's context. Call it
    /// before binding the server socket. A client with another key gets nothing through.
    public func authorizeCurveClients(_ publicKeys: Set<String>) throws {
        let socketBox = Mutex<SocketID?>(nil)
        let (socket, _) = try open(.rep, bind: ["inproc://zeromq.zap.01"]) { [self] frames in
            // Request: version, request id, domain, address, identity, mechanism, credentials...
            guard frames.count >= 6, let id = socketBox.withLock({ $0 }) else { return }
            let mechanism = String(decoding: frames[5], as: UTF8.self)
            let key = frames.count > 6 ? CurveKeyPair.z85(frames[6]) : nil
            let allowed = mechanism == "CURVE" && key.map { publicKeys.contains($0) } == true
            send(id, [frames[0], frames[1], Array((allowed ? "200" : "400").utf8),
                      Array((allowed ? "OK" : "client key not authorized").utf8), Array((key ?? "").utf8), []])
        }
        socketBox.withLock { $0 = socket }
    }

    /// Queues a multipart message on `socket`; a failure (peer gone, full queue) goes to `failure`
    /// on the loop thread.
    public func send(_ socket: SocketID, _ frames: [[UInt8]], failure: (@Sendable (Error) -> Void)? = nil) {
        submit(.send(socket, frames, failure: failure))
    }

    /// Closes one socket.
    public func close(_ socket: SocketID) { submit(.close(socket)) }

    /// Stops the loop: closes every socket, terminates the context, and returns when done.
    public func shutdown() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        finished.wait()
    }

    private func run() {
        loopThread.store(UInt(bitPattern: Int(bitPattern: pthread_self())), ordering: .releasing)
        while !stopping.load(ordering: .acquiring) {
            drainCommands()
            let ids = Array(sockets.keys)
            var items = ids.map { id -> zmq_pollitem_t in
                sockets[id]!.socket.pollItem()
            }
            items.append(zmq_pollitem_t(socket: nil, fd: wakeFD, events: Int16(ZMQ_POLLIN), revents: 0))
            let rc = zmq_poll(&items, Int32(items.count), 1000)
            if rc < 0 { continue }
            if items.last!.revents != 0 {
                var value: UInt64 = 0
                _ = read(wakeFD, &value, 8)
            }
            for (index, id) in ids.enumerated() where items[index].revents & Int16(ZMQ_POLLIN) != 0 {
                guard let entry = sockets[id] else { continue }
                // Drain what is queued now, without blocking.
                while let frames = try? entry.socket.receive(wait: false) {
                    entry.handler(frames)
                }
            }
        }
        drainCommands()
        for (_, entry) in sockets { entry.socket.close() }
        sockets.removeAll()
        context.terminate()
        Glibc.close(wakeFD)
        finished.signal()
    }

    /// Whether the caller is this loop's thread.
    private var isLoopThread: Bool { loopThread.load(ordering: .acquiring) == UInt(bitPattern: Int(bitPattern: pthread_self())) }

    /// Opens a socket (on the loop thread).
    private func openNow(_ id: SocketID, _ kind: SocketKind, _ settings: SocketSettings, _ identity: [UInt8]?, bind: [String],
                         connect: [String], _ handler: @escaping Handler, _ events: EventHandler? = nil) -> Result<[String], Error> {
        do {
            let socket = try ZMQSocket(context: context, kind: kind, settings: settings, identity: identity)
            do {
                if let events {
                    // Before connecting: the first handshake's events are the ones that matter.
                    let address = "inproc://rlhf-monitor-\(ObjectIdentifier(self).hashValue)-\(id.raw)"
                    try socket.monitor(address)
                    let reader = try ZMQSocket(context: context, kind: .pair)
                    do { try reader.connect(address) } catch { reader.close(); throw error }
                    let readerID = SocketID(raw: nextID.wrappingAdd(1, ordering: .relaxed).newValue)
                    sockets[readerID] = (reader, { frames in if let event = SocketEvent.decode(frames) { events(event) } })
                    monitors[id] = readerID
                }
                let bound = try bind.map { try socket.bind($0) }
                for endpoint in connect { try socket.connect(endpoint) }
                sockets[id] = (socket, handler)
                return .success(bound)
            } catch {
                if let reader = monitors.removeValue(forKey: id) { sockets.removeValue(forKey: reader)?.socket.close() }
                socket.close()
                return .failure(error)
            }
        } catch {
            return .failure(error)
        }
    }

    /// Runs queued commands until none are left (a job or handler may queue more: sends, other jobs),
    /// so a request, its handling and its reply take one pass of the loop.
    private func drainCommands() {
        while true {
            let commands = queue.withLock { q -> [Command] in
                let taken = q
                q.removeAll()
                return taken
            }
            if commands.isEmpty { return }
            execute(commands)
        }
    }

    private func execute(_ commands: [Command]) {
        for command in commands {
            switch command {
            case let .open(id, kind, settings, identity, bind, connect, handler, events, reply):
                reply(openNow(id, kind, settings, identity, bind: bind, connect: connect, handler, events))
            case let .send(id, frames, failure):
                guard let entry = sockets[id] else {
                    failure?(TransportError("send on a closed socket"))
                    continue
                }
                do {
                    try entry.socket.send(frames, wait: false)
                } catch {
                    failure?(error)
                }
            case let .close(id):
                sockets.removeValue(forKey: id)?.socket.close()
                if let reader = monitors.removeValue(forKey: id) { sockets.removeValue(forKey: reader)?.socket.close() }
            case let .job(job):
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
        }
    }
}

/// The loop is also a task executor: work started with `Task(executorPreference: loop)` runs on the
/// loop thread, between polls, next to the sockets it answers on, with no hop to another thread.
/// Such work must be short (it delays every socket of the loop).
extension PollLoop: TaskExecutor {
    public func enqueue(_ job: consuming ExecutorJob) {
        submit(.job(UnownedJob(job)))
    }
}

extension ZMQSocket {
    /// A poll item asking for input on this socket.
    func pollItem() -> zmq_pollitem_t {
        zmq_pollitem_t(socket: rawHandle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
    }
}
