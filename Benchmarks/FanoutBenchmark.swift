import ClusterRuntime
import Foundation
import LlamaCore
import Recipe
import Transport
import Wire

/// `rlhf bench fanout`: the sampling of a rejection-sampling round (K samples of each prompt, one prompt
/// a task) spread over 1, then 2 generator processes, timed in the same run: the fan-out ratio. Then the
/// same work in one process with as many threads as the two processes had in all, and the
/// coordinator's dispatch capacity divided by one generator's task rate: how many generators one
/// coordinator can keep busy.
public struct FanoutBenchmark: Sendable {

    /// Policy checkpoint (a Hugging Face model directory, or a file with tokenizer.bin beside it).
    public var checkpoint: String
    /// Prompts of the round (the embedded task's training prompts).
    public var prompts: Int
    /// Samples per prompt (K).
    public var samples: Int
    /// Most new tokens per sample.
    public var maxNewTokens: Int
    /// Sampling temperature.
    public var temperature: Float
    /// Generator processes of the fan-out.
    public var generators: Int


    /// A generator daemon started by the benchmark (its output discarded).
    struct Worker {
        let process: Process
        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
    }


    public init(checkpoint: String = "models/chat-world/sft.bin", prompts: Int = 512, samples: Int = 8, maxNewTokens: Int = 96, temperature: Float = 1.0, generators: Int = 2) {
        self.checkpoint = checkpoint
        self.prompts = prompts
        self.samples = samples
        self.maxNewTokens = maxNewTokens
        self.temperature = temperature
        self.generators = generators
    }

    /// Runs the benchmark, printing its figures and ratios.
    public func run() throws {
        guard generators >= 2 else { throw BenchmarkError("--generators must be 2 or more (the fan-out is compared with one)") }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; load average \(loadAverage())")
        let tokenizerPath = Tokenizer.defaultPath(forCheckpoint: checkpoint)
        let tokenizer = try Tokenizer(path: tokenizerPath)
        let context = TaskContext(embeddedSeed: 1, tokenizer: tokenizer, preferencePairs: 1)
        var pool = context.trainPrompts
        var random = SeededGenerator(seed: 1_000)
        random.shuffle(&pool)
        let request = GenerateRequest(prompts: pool.prefix(prompts).map { GenerateRequest.Prompt(id: $0.id, tokens: $0.ids) },
                                      samplesPerPrompt: samples, sampling: SamplingSettings(temperature: temperature, topP: 1), seed: 1_000,
                                      maxNewTokens: maxNewTokens, stopTokens: tokenizer.stopIds)

        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.membership.heartbeatIntervalMilliseconds = 500
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        var workers: [Worker] = []
        defer { workers.forEach { $0.stop() } }

        /// Times the round's sampling on the generators registered now; returns seconds, tokens and samples.
        func round() throws -> (seconds: Double, tokens: Int, samples: [Samples.Sample]) {
            let start = Date()
            let results = try coordinator.generate(request, promptsPerTask: 1, timeoutSeconds: 1_800)
            return (Date().timeIntervalSince(start), results.reduce(0) { $0 + $1.tokens.count }, results)
        }
        func start(_ id: String, threads: Int) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
            process.arguments = ["worker", "--role", "generator", "--coordinator", coordinator.endpoint, "--id", id, "--checkpoint", checkpoint,
                                 "--threads", "\(threads)"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            workers.append(Worker(process: process))
            let deadline = Date().addingTimeInterval(60)
            while !coordinator.workers().contains(where: { $0.registration.workerID == id && $0.health == .healthy }) {
                guard Date() < deadline else { throw BenchmarkError("generator \(id) did not register within 60 s") }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        func stopAll() {
            workers.forEach { $0.stop() }
            workers.removeAll()
            // Wait for the coordinator to see them gone, so that no task goes to a stopped one.
            let deadline = Date().addingTimeInterval(10)
            while coordinator.workers().contains(where: { $0.health == .healthy }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        }

        print("round: \(prompts) prompts x \(samples) samples, at most \(maxNewTokens) new tokens, T=\(temperature), one prompt a task, "
              + "checkpoint \(checkpoint)")
        try start("bench-generator-0", threads: 1)
        _ = try coordinator.generate(warmUp(request), promptsPerTask: 1)
        let one = try round()
        let taskRate = Double(prompts) / one.seconds
        print(String(format: "1 generator process (1 thread): %.2f s, %d tokens, %.0f tok/s, %.1f tasks/s", one.seconds, one.tokens,
                     Double(one.tokens) / one.seconds, taskRate))
        for g in 1..<generators { try start("bench-generator-\(g)", threads: 1) }
        let many = try round()
        let same = Set(one.samples.map { "\($0.promptID)/\($0.index)/\($0.tokens)" }) == Set(many.samples.map { "\($0.promptID)/\($0.index)/\($0.tokens)" })
        print(String(format: "%d generator processes (1 thread each): %.2f s, %d tokens, %.0f tok/s; fan-out ratio %.2fx against 1 process "
                     + "(ideal %d.00x with a core each); the same samples: %@", generators, many.seconds, many.tokens,
                     Double(many.tokens) / many.seconds, one.seconds / many.seconds, generators, same ? "yes" : "NO"))
        stopAll()
        try start("bench-generator-threads", threads: generators)
        _ = try coordinator.generate(warmUp(request), promptsPerTask: 1)
        let threaded = try round()
        print(String(format: "the same work in 1 process with %d threads: %.2f s, %.0f tok/s; %d processes are %.2fx that", generators,
                     threaded.seconds, Double(threaded.tokens) / threaded.seconds, generators, threaded.seconds / many.seconds))
        stopAll()
        let (_, capacity) = try TransportBenchmark.dispatchCapacity(workers: 32, tasks: 30_000)
        print(String(format: "dispatch capacity %.0f tasks/s / one generator's %.1f tasks/s (%d samples a task) = %.0f generators one coordinator "
                     + "can keep busy at this task size", capacity, taskRate, samples, capacity / taskRate))
    }

    /// A few prompts of `request`: loads the weights and warms the caches before the timed runs.
    func warmUp(_ request: GenerateRequest) -> GenerateRequest {
        var r = request
        r.prompts = Array(r.prompts.prefix(4))
        return r
    }
}
