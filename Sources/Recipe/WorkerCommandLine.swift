import ClusterRuntime
import Launcher
import Workers

extension ClusterSpec {
    /// The `rlhf worker` arguments of worker `id` of `role` on `host`: what the launcher starts (locally,
    /// over ssh, as a Slurm step) and what a Kubernetes StatefulSet runs. `coordinator` is the endpoint
    /// the worker dials; `runID` binds it to the run (nil: to the first coordinator that admits it);
    /// `stateDirectory` is where a learner saves its state, `restoreStep` the step whose state it
    /// restores; `path` maps a file path of the spec to where the worker's machine has it.
    public func workerArguments(id: String, role: WorkerRole, host: WorkerHost, coordinator: String, runID: String?, stateDirectory: String,
                                restoreStep: Int? = nil, path: (String) -> String = { $0 }) -> [String] {
        // A reward model the spec gives pretrained is the model its workers run (with its own head).
        let model = pretrainedRewardModels[role] ?? checkpoint
        var arguments = ["worker", "--role", role.rawValue, "--coordinator", coordinator, "--id", id, "--checkpoint", path(model)]
        if let runID { arguments += ["--run-id", runID] }
        arguments += ["--orphan-timeout", "\(orphanTimeoutSeconds)"]
        // The host's threads for the role (a Slurm step's CPUs are its worker's compute threads).
        let threads = host.computeThreads(role)
        if threads != 1 || host.isSlurm { arguments += ["--threads", "\(threads)"] }
        if role == .generator && decodeSlots != GeneratorService.defaultDecodeSlots { arguments += ["--decode-slots", "\(decodeSlots)"] }
        if role == .generator && precision.generator != .float32 { arguments += ["--precision", precision.generator.rawValue] }
        if role == .generator && precision.kvCache != .float32 { arguments += ["--kv-cache", precision.kvCache.rawValue] }
        if role == .learner && precision.learner != .float32 { arguments += ["--precision", precision.learner.rawValue] }
        if role == .learner, let directory = pretrainedRewardModels[.rewardModel] { arguments += ["--pretrained-reward-model", path(directory)] }
        if role == .learner, let directory = pretrainedRewardModels[.safetyModel] { arguments += ["--pretrained-safety-model", path(directory)] }
        if role == .learner, let lora {
            arguments += ["--lora-rank", "\(lora.rank)", "--lora-alpha", "\(lora.alpha)", "--lora-dropout", "\(lora.dropout)",
                          "--lora-targets", lora.targets.map(\.name).joined(separator: ",")]
        }
        if role == .rewardModel, let head = rewardHead { arguments += ["--head", path(head)] }
        if role == .safetyModel, let head = safetyHead { arguments += ["--head", path(head)] }
        if role == .safetyModel { arguments += ["--seed", "2"] }
        if role == .rewardFunction, let function = rewardFunction {
            if let endpoint = function.endpoint {
                arguments += ["--reward-endpoint", endpoint, "--reward-label-key", data?.keys.label ?? "label"]
            } else {
                arguments += ["--reward-command", function.arguments.joined(separator: " "), "--reward-directory", path(function.directory)]
            }
            arguments += ["--reward-timeout", "\(function.timeoutSeconds)"]
        }
        if role == .learner {
            arguments += ["--state-dir", stateDirectory]
            if let restoreStep { arguments += ["--restore-step", "\(restoreStep)"] }
        }
        if let curve {
            arguments += ["--curve-server", path(curve.server + ".pub"), "--curve-key", path(curve.client + ".key")]
            if role == .learner { arguments += ["--curve-serve-key", path(curve.server + ".key"), "--curve-allow", path(curve.client + ".pub")] }
        }
        return arguments
    }
}
