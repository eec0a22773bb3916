import ClusterRuntime
import Foundation
import Yams

/// A cluster spec (YAML in cluster/): where the coordinator listens, which hosts run which workers,
/// the model, and the plan. Every key is checked; an error names the key and the reason.
public struct ClusterSpec: Sendable, Equatable {
    /// One host and the workers it runs.
    public struct Host: Sendable, Equatable {
        public var name: String
        /// "local", or an ssh destination (`user@host`).
        public var address: String
        /// How many workers of each role.
        public var workers: [WorkerRole: Int]
        /// Path of the rlhf executable there (default: the same path as here).
        public var executable: String?
        /// Network namespace to run the workers in (test hosts made by cluster/make-test-hosts).
        public var namespace: String?
    }

    /// One plan step.
    public enum Step: Sendable, Equatable {
        /// Sample `samples` completions of `prompts` prompts (random token prompts when the spec
        /// has no data) and report throughput.
        case generate(prompts: Int, samples: Int, maxNewTokens: Int, temperature: Float)
        /// Keep the cluster up for `seconds` (to look at it with `rlhf status`).
        case hold(seconds: Double)
    }

    public var coordinator: String
    public var hosts: [Host]
    public var checkpoint: String
    public var plan: [Step]
    public var heartbeatMilliseconds: UInt64

    /// A spec error: the key (dotted path) and why.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let key: String
        public let reason: String
        public var description: String { "invalid cluster spec: \(key): \(reason)" }
    }

    /// Only the coordinator endpoint of a spec file (what `rlhf status` needs).
    public static func coordinatorEndpoint(ofSpecAt path: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Invalid(key: "(file)", reason: "cannot read \(path)")
        }
        guard let top = (try? Yams.load(yaml: text)) as? [String: Any], let endpoint = top["coordinator"] as? String else {
            throw Invalid(key: "coordinator", reason: "no coordinator endpoint in \(path)")
        }
        return endpoint
    }

    /// Parses YAML text; relative paths are resolved against `baseDirectory`.
    public static func parse(_ text: String, baseDirectory: String) throws -> ClusterSpec {
        let root: Any?
        do {
            root = try Yams.load(yaml: text)
        } catch {
            throw Invalid(key: "(file)", reason: "not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any] else { throw Invalid(key: "(file)", reason: "expected a mapping at the top level") }
        let known: Set<String> = ["coordinator", "hosts", "model", "plan", "heartbeat_ms"]
        if let unknown = top.keys.first(where: { !known.contains($0) }) {
            throw Invalid(key: unknown, reason: "unknown key (expected one of \(known.sorted().joined(separator: ", ")))")
        }
        guard let coordinator = top["coordinator"] as? String, coordinator.hasPrefix("tcp://") else {
            throw Invalid(key: "coordinator", reason: "expected an endpoint like tcp://127.0.0.1:5555")
        }
        guard let hostList = top["hosts"] as? [Any], !hostList.isEmpty else {
            throw Invalid(key: "hosts", reason: "expected a non-empty list of hosts")
        }
        var hosts: [Host] = []
        for (i, item) in hostList.enumerated() {
            let key = "hosts[\(i)]"
            guard let h = item as? [String: Any] else { throw Invalid(key: key, reason: "expected a mapping") }
            guard let name = h["name"] as? String, !name.isEmpty else { throw Invalid(key: "\(key).name", reason: "expected a name") }
            let address = h["address"] as? String ?? "local"
            guard let roles = h["workers"] as? [String: Any], !roles.isEmpty else {
                throw Invalid(key: "\(key).workers", reason: "expected a mapping of role to count")
            }
            var workers: [WorkerRole: Int] = [:]
            for (roleName, count) in roles {
                guard let role = WorkerRole(rawValue: roleName) else {
                    throw Invalid(key: "\(key).workers.\(roleName)",
                                  reason: "unknown role (expected \(WorkerRole.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                guard let n = count as? Int, n >= 0 else { throw Invalid(key: "\(key).workers.\(roleName)", reason: "expected a count >= 0") }
                workers[role] = n
            }
            hosts.append(Host(name: name, address: address, workers: workers, executable: h["executable"] as? String,
                              namespace: h["namespace"] as? String))
        }
        guard let model = top["model"] as? [String: Any], let path = model["checkpoint"] as? String else {
            throw Invalid(key: "model.checkpoint", reason: "expected the path of a checkpoint")
        }
        let checkpoint = path.hasPrefix("/") ? path : (baseDirectory as NSString).appendingPathComponent(path)
        guard FileManager.default.fileExists(atPath: checkpoint) else {
            throw Invalid(key: "model.checkpoint", reason: "no file at \(checkpoint)")
        }
        var plan: [Step] = []
        for (i, item) in ((top["plan"] as? [Any]) ?? []).enumerated() {
            guard let step = item as? [String: Any], step.count == 1, let (kind, value) = step.first else {
                throw Invalid(key: "plan[\(i)]", reason: "expected a mapping with one step kind")
            }
            switch kind {
            case "generate":
                let args = value as? [String: Any] ?? [:]
                let prompts = args["prompts"] as? Int ?? 8, samples = args["samples"] as? Int ?? 4
                let maxNew = args["max_new_tokens"] as? Int ?? 32
                let temperature = (args["temperature"] as? Double).map(Float.init) ?? 1.0
                guard prompts > 0, samples > 0, maxNew > 0 else {
                    throw Invalid(key: "plan[\(i)].generate", reason: "prompts, samples and max_new_tokens must be positive")
                }
                plan.append(.generate(prompts: prompts, samples: samples, maxNewTokens: maxNew, temperature: temperature))
            case "hold":
                let args = value as? [String: Any] ?? [:]
                let seconds = (args["seconds"] as? Double) ?? (args["seconds"] as? Int).map(Double.init) ?? 0
                guard seconds > 0 else { throw Invalid(key: "plan[\(i)].hold.seconds", reason: "expected a positive number of seconds") }
                plan.append(.hold(seconds: seconds))
            default:
                throw Invalid(key: "plan[\(i)].\(kind)", reason: "unknown step (this build runs: generate, hold)")
            }
        }
        let heartbeat = top["heartbeat_ms"] as? Int ?? 500
        guard heartbeat >= 10 else { throw Invalid(key: "heartbeat_ms", reason: "must be at least 10") }
        return ClusterSpec(coordinator: coordinator, hosts: hosts, checkpoint: checkpoint, plan: plan,
                           heartbeatMilliseconds: UInt64(heartbeat))
    }
}
