import Wire
import Foundation
import LlamaCore

/// Who this process is on the wire: the build hash (peers must run the same build: distributed-actor
/// targets are mangled symbols), host and pid.
public enum BuildIdentity {
    /// CRC-32C of this executable's bytes, hexadecimal; computed once.
    public static let hash: String = hash(ofExecutable: "/proc/self/exe")

    /// The build hash of the executable at `path` (what a process started from it will announce).
    public static func hash(ofExecutable path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "unknown" }
        return String(CRC32C.checksum(Array(data)), radix: 16)
    }

    /// The host name.
    public static var host: String { ProcessInfo.processInfo.hostName }

    /// This process's id.
    public static var pid: Int32 { ProcessInfo.processInfo.processIdentifier }

    /// Where a scheduler placed this process (nil outside one).
    public static var placement: SchedulerPlacement? { SchedulerPlacement.from(environment: ProcessInfo.processInfo.environment) }

    /// Milliseconds of the monotonic clock (for heartbeats and health).
    public static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds / 1_000_000 }
}

extension WorkerRole {
    /// The wire's role.
    public var wire: Rlhf_V1_Role {
        switch self {
        case .generator: return .generator
        case .rewardModel: return .rewardModel
        case .safetyModel: return .safetyModel
        case .learner: return .learner
        case .referencePolicy: return .referencePolicy
        case .rewardFunction: return .rewardFunction
        }
    }

    /// The role of a wire value (nil for the coordinator or an unknown value).
    public init?(wire: Rlhf_V1_Role) {
        switch wire {
        case .generator: self = .generator
        case .rewardModel: self = .rewardModel
        case .safetyModel: self = .safetyModel
        case .learner: self = .learner
        case .referencePolicy: self = .referencePolicy
        case .rewardFunction: self = .rewardFunction
        default: return nil
        }
    }
}
