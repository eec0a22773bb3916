import Foundation
import LlamaCore
import Synchronization
import Transport
import Wire

/// Serves the learner's current weight version over a ROUTER socket: a WEIGHT_ANNOUNCE request gets
/// the announcement, a WEIGHT_CHUNK_REQUEST gets the chunk (tensor frame "chunk") or an ERROR naming
/// the problem (another version, a bad range, a malformed message). Never over PUB/SUB: a full queue
/// there drops silently.
public final class WeightServer: Sendable {
    private let loop: PollLoop
    private let socket: PollLoop.SocketID
    private final class Current: Sendable { let publisher = Mutex<WeightPublisher?>(nil) }
    private let current = Current()
    /// The endpoint bound.
    public let endpoint: String

    /// Binds a ROUTER socket on `loop` at `endpoint` (e.g. `tcp://0.0.0.0:*`). With `curve`, the link
    /// is encrypted and only the listed client keys are admitted.
    public init(loop: PollLoop, bind endpoint: String, curve: CurveServerKeys? = nil) throws {
        self.loop = loop
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        let current = self.current
        var settings = SocketSettings.default
        if let curve {
            try loop.authorizeCurveClients(curve.clients)
            settings.curve = .server(secretKey: curve.secretKey)
        }
        let (socket, bound) = try loop.open(.router, settings: settings, bind: [endpoint]) { frames in
            guard let id = socketBox.withLock({ $0 }), frames.count >= 2 else { return }
            let reply = WeightServer.answer(Array(frames.dropFirst()), publisher: current.publisher.withLock { $0 })
            if let reply { loop.send(id, [frames[0]] + reply) }
        }
        socketBox.withLock { $0 = socket }
        self.socket = socket
        self.endpoint = bound.first ?? endpoint
    }

    /// Starts serving `publisher`'s version (requests for any other version are refused from now on).
    public func publish(_ publisher: WeightPublisher) { current.publisher.withLock { $0 = publisher } }

    static func error(_ code: Rlhf_V1_ErrorCode, _ text: String, requestID: UInt64) -> [[UInt8]]? {
        WireMessage.errorFrames(code, text, requestID: requestID)
    }

    static func answer(_ frames: [[UInt8]], publisher: WeightPublisher?) -> [[UInt8]]? {
        let message: WireMessage
        do {
            message = try WireMessage.decode(frames)
        } catch {
            return WeightServer.error(.badMessage, "\(error)", requestID: 0)
        }
        guard let publisher else { return error(.wrongPolicyVersion, "no weights published yet", requestID: message.requestID) }
        switch message.type {
        case .weightAnnounce:
            return try? WireMessage(type: .weightAnnounce, requestID: message.requestID, body: publisher.announcement.wire,
                                    policyVersion: publisher.policyVersion).frames()
        case .weightChunkRequest:
            do {
                let request = try message.decodeBody(Rlhf_V1_WeightChunkRequest.self)
                let bytes = try publisher.chunk(request)
                var chunk = Rlhf_V1_WeightChunk()
                chunk.policyVersion = request.policyVersion
                chunk.tensorIndex = request.tensorIndex
                chunk.offset = request.offset
                let tensor = WireTensor(name: "chunk", dtype: .uint8, shape: [bytes.count], bytes: bytes,
                                        crc32c: publisher.checksum(of: request))
                return try WireMessage(type: .weightChunk, requestID: message.requestID, body: chunk, tensors: [tensor],
                                       policyVersion: request.policyVersion).frames()
            } catch let e as WeightSyncError {
                if case .wrongVersion = e { return error(.wrongPolicyVersion, e.description, requestID: message.requestID) }
                return error(.invalidArgument, e.description, requestID: message.requestID)
            } catch {
                return WeightServer.error(.badMessage, "\(error)", requestID: message.requestID)
            }
        default:
            return error(.unknownType, "weight server does not handle \(message.type)", requestID: message.requestID)
        }
    }
}

/// Pulls a published version from a `WeightServer`, keeping `window` chunk requests in flight, and
/// returns the verified weights (never partially applied weights: the caller swaps them in whole).
public enum WeightFetcher {
    /// Failures of a fetch.
    public enum Failure: Error, CustomStringConvertible {
        case timeout
        case refused(String)
        case sync(WeightSyncError)

        public var description: String {
            switch self {
            case .timeout: return "weight fetch timed out"
            case let .refused(reason): return "weight server refused: \(reason)"
            case let .sync(e): return e.description
            }
        }
    }

    /// The whole weights LoRA adapters merge into, and their checksum (nil: not known yet, computed only
    /// when adapters arrive).
    public struct Base: Sendable {
        public let weights: ModelWeights
        public let checksum: UInt32?

        public init(weights: ModelWeights, checksum: UInt32? = nil) {
            self.weights = weights
            self.checksum = checksum
        }
    }

    /// A fetched policy: its weights (adapters merged into their base), version, and for adapters the
    /// base they were merged into (a consumer keeps it for the next version) and the bytes moved.
    public struct Fetched: Sendable {
        public let weights: ModelWeights
        public let policyVersion: UInt64
        /// With adapters: their base, its checksum known.
        public let base: Base?
        /// Bytes transferred: the tensors announced, and the base when it had to be fetched too.
        public let bytes: UInt64
    }

    /// Fetches the server's current version for a model of `config`. With `expected`, the server must
    /// be serving exactly that announcement (version and every tensor's checksum), or the fetch is refused.
    /// LoRA adapters are merged into their base, fetched from its own source.
    public static func fetch(loop: PollLoop, endpoint: String, config: LlamaConfig, expected: WeightAnnouncement? = nil,
                             curve: Curve? = nil, window: Int = 16, timeoutSeconds: Double = 60) throws -> (weights: ModelWeights, policyVersion: UInt64) {
        let fetched = try fetchPolicy(loop: loop, endpoint: endpoint, config: config, expected: expected, curve: curve, window: window,
                                      timeoutSeconds: timeoutSeconds)
        return (fetched.weights, fetched.policyVersion)
    }

    /// `fetch` with the base of LoRA adapters kept apart: `heldBase`, one the caller already holds, is
    /// used when its checksum is the announced base's (computed once when not given), else the base is
    /// fetched from its own source.
    public static func fetchPolicy(loop: PollLoop, endpoint: String, config: LlamaConfig, expected: WeightAnnouncement? = nil,
                                   heldBase: Base? = nil, curve: Curve? = nil, window: Int = 16,
                                   timeoutSeconds: Double = 60) throws -> Fetched {
        let (storage, announce) = try fetchTensors(loop: loop, endpoint: endpoint, expected: expected, curve: curve, window: window,
                                                   timeoutSeconds: timeoutSeconds) { served in
            if let lora = served.lora { return try adapterLayout(lora, config: config).entries.tensorSet() }
            return ModelWeights(zerosFor: config).tensorSet
        }
        guard let lora = announce.lora else {
            return Fetched(weights: ModelWeights(config: config, storage: storage), policyVersion: announce.policyVersion, base: nil,
                           bytes: announce.totalBytes)
        }
        var bytes = announce.totalBytes
        let base: ModelWeights
        if let heldBase, (heldBase.checksum ?? heldBase.weights.checksum) == lora.base.modelChecksum {
            base = heldBase.weights
        } else {
            let (baseStorage, _) = try fetchTensors(loop: loop, endpoint: lora.base.source, expected: lora.base, curve: curve, window: window,
                                                    timeoutSeconds: timeoutSeconds) { _ in ModelWeights(zerosFor: config).tensorSet }
            base = ModelWeights(config: config, storage: baseStorage)
            bytes += lora.base.totalBytes
        }
        let layout = try adapterLayout(lora, config: config)
        return Fetched(weights: layout.merged(storage, into: base), policyVersion: announce.policyVersion,
                       base: Base(weights: base, checksum: lora.base.modelChecksum), bytes: bytes)
    }

    /// The layout announced adapters must have on a model of `config`.
    static func adapterLayout(_ lora: WeightAnnouncement.Adapters, config: LlamaConfig) throws(WeightSyncError) -> LoRALayout {
        let targets = lora.targets.map { LoRASettings.target(named: $0) }
        guard targets.allSatisfy({ $0 != nil }) else {
            throw .layoutMismatch("LoRA targets \(lora.targets) name a matrix that cannot be adapted")
        }
        do {
            return try LoRALayout(config: config, settings: LoRASettings(rank: lora.rank, alpha: lora.alpha, targets: targets.map { $0! }))
        } catch {
            throw .layoutMismatch("LoRA adapters announced with \(error)")
        }
    }

    /// Fetches the tensors a server announces into the fresh buffer `target(announcement)` lays out.
    static func fetchTensors(loop: PollLoop, endpoint: String, expected: WeightAnnouncement?, curve: Curve?, window: Int,
                             timeoutSeconds: Double,
                             target: @escaping @Sendable (WeightAnnouncement) throws -> TensorSet)
        throws -> (FloatBuffer, WeightAnnouncement) {
        final class State: @unchecked Sendable {
            var assembler: WeightAssembler?
            var failure: Failure?
            var done = false
            var nextRequestID: UInt64 = 1
        }
        let state = Mutex(State())
        let finished = DispatchSemaphore(value: 0)
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        @Sendable func sendNext(_ s: State, _ id: PollLoop.SocketID) {
            guard var assembler = s.assembler, let request = assembler.nextRequest() else { return }
            s.assembler = assembler
            s.nextRequestID += 1
            if let frames = try? WireMessage(type: .weightChunkRequest, requestID: s.nextRequestID, body: request).frames() {
                loop.send(id, frames)
            }
        }
        var settings = SocketSettings.default
        settings.curve = curve
        let (socket, _) = try loop.open(.dealer, settings: settings, connect: [endpoint]) { frames in
            state.withLock { s in
                guard !s.done, let id = socketBox.withLock({ $0 }) else { return }
                do {
                    let message = try WireMessage.decode(frames)
                    switch message.type {
                    case .weightAnnounce:
                        let served = try WeightAnnouncement(wire: message.decodeBody(Rlhf_V1_WeightAnnounce.self))
                        if let expected, served.policyVersion != expected.policyVersion || served.tensors != expected.tensors
                            || served.lora != expected.lora {
                            throw Failure.refused("the server at \(endpoint) serves version \(served.policyVersion) (checksum "
                                + String(format: "%08x", served.modelChecksum) + "), not the announced version \(expected.policyVersion) (checksum "
                                + String(format: "%08x", expected.modelChecksum) + ")")
                        }
                        s.assembler = try WeightAssembler(announcement: served, into: target(served))
                        for _ in 0..<window { sendNext(s, id) }
                    case .weightChunk:
                        let chunk = try message.decodeBody(Rlhf_V1_WeightChunk.self)
                        guard let frame = message.tensor("chunk") else { throw Failure.refused("chunk frame missing") }
                        // The wire verified the frame's checksum; the tensor check combines these.
                        try s.assembler?.receive(tensorIndex: chunk.tensorIndex, offset: chunk.offset, bytes: frame.bytes,
                                                 crc32c: frame.crc32c)
                        if s.assembler?.isComplete == true {
                            s.done = true
                            finished.signal()
                        } else {
                            sendNext(s, id)
                        }
                    case .error:
                        throw Failure.refused((try? message.decodeBody(Rlhf_V1_Error.self).message) ?? "error")
                    default:
                        throw Failure.refused("unexpected \(message.type)")
                    }
                } catch let f as Failure {
                    s.failure = f; s.done = true; finished.signal()
                } catch let e as WeightSyncError {
                    s.failure = .sync(e); s.done = true; finished.signal()
                } catch {
                    s.failure = .refused("\(error)"); s.done = true; finished.signal()
                }
            }
        }
        socketBox.withLock { $0 = socket }
        defer { loop.close(socket) }
        var announce = Rlhf_V1_WeightChunkRequest()
        announce.policyVersion = 0
        loop.send(socket, try WireMessage(type: .weightAnnounce, requestID: 1, body: announce).frames())
        guard finished.wait(timeout: .now() + timeoutSeconds) == .success else { throw Failure.timeout }
        return try state.withLock { s -> (FloatBuffer, WeightAnnouncement) in
            if let failure = s.failure { throw failure }
            guard let assembler = s.assembler else { throw Failure.timeout }
            do {
                return (try assembler.finish(), assembler.announcement)
            } catch let error as WeightSyncError {
                throw Failure.sync(error)
            }
        }
    }
}

/// Where a learner opens its weight servers (one per model it trains): the process's poll loop, the
/// address to bind (e.g. `tcp://0.0.0.0:*`), the host consumers reach it at, and the CURVE keys when
/// the cluster is encrypted.
public struct WeightServing: Sendable {
    public let loop: PollLoop
    public let bind: String
    public let host: String
    public let curve: CurveServerKeys?

    public init(loop: PollLoop, bind: String, host: String, curve: CurveServerKeys? = nil) {
        self.loop = loop
        self.bind = bind
        self.host = host
        self.curve = curve
    }

    /// A new weight server and the endpoint consumers fetch from (its bound port on `host`).
    public func open() throws -> (server: WeightServer, advertised: String) {
        let server = try WeightServer(loop: loop, bind: bind, curve: curve)
        return (server, WeightServing.advertise(server.endpoint, host: host))
    }

    /// `tcp://0.0.0.0:PORT` (what a wildcard bind reports) with `host` in place of the address.
    public static func advertise(_ bound: String, host: String) -> String {
        guard let colon = bound.lastIndex(of: ":") else { return bound }
        return "tcp://\(host)\(bound[colon...])"
    }
}
