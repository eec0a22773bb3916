import ArgumentParser

/// The `rlhf` executable: one entry point for the cluster, the trainers and the core's tools.
@main
struct RLHF: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rlhf",
        abstract: "SwiftRLHF: LLaMA2-style RLHF (SFT, reward models, rejection sampling, PPO) in Swift.",
        subcommands: [
            LaunchCommand.self,
            CoordinatorCommand.self,
            WorkerCommand.self,
            StatusCommand.self,
            KeysCommand.self,
            GenerateCommand.self,
            TokenizeCommand.self,
            TokenizerCommand.self,
            SelftestCommand.self,
            CheckpointCommand.self,
            BenchCommand.self,
            TaskCommand.self,
            TrainCommand.self,
            EvalCommand.self,
        ]
    )
}
