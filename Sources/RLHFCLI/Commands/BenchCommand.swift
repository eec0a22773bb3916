import ArgumentParser
import Benchmarks
import Foundation

/// `rlhf bench`: performance benchmarks that print ratios against their named baselines. The commands
/// parse and check their options; the measurements are in the Benchmarks module.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (figures and ratios against the named baselines, measured in one run).",
        subcommands: [GenerateBench.self, RolloutBench.self, TrainBench.self, TokenizeBench.self, LoadBench.self, TransportBench.self, FanoutBench.self]
    )
}

/// The baselines a bench measures beside ours, in the same run.
struct BaselineOptions: ParsableArguments {
    @Option(help: "llama2.c's run.c (or a folder holding it, built with gcc -Ofast -march=native -fopenmp) or its built binary.")
    var llama2c: String?
    @Option(help: "A Python with torch: PyTorch runs the same model on the same weights as a baseline.")
    var torch: String?

    var settings: Baselines { Baselines(llama2c: llama2c, torch: torch) }
}

/// Runs a benchmark; its failures name the problem the way every command's do.
private func bench(_ run: () throws -> Void) throws {
    do {
        try run()
    } catch {
        throw cliFailure(error)
    }
}

struct GenerateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Decode throughput (batch 1 float32/bfloat16, batch B with top-p 0.9 and 1), prefill, memory bandwidth and peak memory on random-weight models, against llama2.c and PyTorch measured in the same run.",
        discussion: """
        Every figure is the best of --repeats rounds; within a round our measurements and the baselines' \
        alternate, so a busy minute slows both. Batch-1 against llama2.c also prints the ratio of each \
        round and their median (the best of each side may come from different moments). Without \
        --llama2c or --torch the bench prints our figures alone and names the baselines it skipped.
        """
    )
    @Option(help: "Configs to run, comma-separated: 15M, gqa, 110M, or all.")
    var config: String = "all"
    @Option(help: "Thread counts to measure, comma-separated.")
    var threads: String = "1,2"
    @Option(help: "Rounds per figure; the best is reported (the machine is shared and noisy: +-10% between minutes).")
    var repeats: Int = 3
    @Option(help: "Batch size for batched decode.")
    var batch: Int = 16
    @Option(help: "Tokens each batched sequence generates.")
    var batchTokens: Int = 128
    @Option(help: "Positions batch-1 decode generates (at most the model's context).")
    var steps: Int = 256
    @Option(help: "Write the figures as JSON to this file too.")
    var jsonOut: String?
    @OptionGroup var baselines: BaselineOptions

    func validate() throws {
        _ = try OptionCheck.threadList(threads)
        for name in config.lowercased() == "all" ? [] : config.split(separator: ",").map(String.init) {
            do { _ = try benchConfig(name) } catch { throw ValidationError("\(error)") }
        }
        try OptionCheck.integer(repeats, "--repeats", 1 ... 1_000)
        try OptionCheck.integer(batch, "--batch", 1 ... 65_536)
        try OptionCheck.integer(batchTokens, "--batch-tokens", 2 ... 1_000_000)
        try OptionCheck.integer(steps, "--steps", 2 ... 1_000_000)
    }

    func run() throws {
        if let jsonOut { try OutputCheck.writable(jsonOut, option: "--json-out") }
        let benchmark = GenerateBenchmark(config: config, threads: try OptionCheck.threadList(threads), repeats: repeats, batch: batch, batchTokens: batchTokens, steps: steps, jsonOut: jsonOut, baselines: baselines.settings)
        try bench { try benchmark.run() }
    }
}

struct RolloutBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Rollout sampling (K samples of each prompt, answers of varied length) with continuous batching against static batching of the same slots, interleaved in one run on the same random weights; both must sample the same tokens.",
        discussion: """
        Answer lengths are drawn as if EOS came with --eos-probability at every token (capped at \
        --max-new-tokens), so a static batch waits for its longest member while continuous batching \
        refills a slot as soon as its answer ends.
        """
    )
    @Option(help: "Model shape: 15M, gqa or 110M.")
    var config = "110M"
    @Option(help: "Thread counts to measure, comma-separated.")
    var threads = "2"
    @Option(help: "Prompts of the round.")
    var prompts = 64
    @Option(help: "Samples per prompt (K).")
    var samples = 4
    @Option(help: "Longest answer, in new tokens.")
    var maxNewTokens = 256
    @Option(help: "Chance that a token ends its answer (answer lengths are geometric).")
    var eosProbability = 1.0 / 128
    @Option(help: "Decode slots (and the static batch size).")
    var slots = 16
    @Option(help: "Rounds per figure; the best is reported.")
    var repeats = 1
    @Option(help: "Write the figures as JSON to this file too.")
    var jsonOut: String?

    func validate() throws {
        _ = try OptionCheck.threadList(threads)
        do { _ = try benchConfig(config) } catch { throw ValidationError("\(error)") }
        try OptionCheck.integer(prompts, "--prompts", 1 ... 1_000_000)
        try OptionCheck.integer(samples, "--samples", 1 ... 1_024)
        try OptionCheck.integer(maxNewTokens, "--max-new-tokens", 1 ... 1_000_000)
        try OptionCheck.number(eosProbability, "--eos-probability", 0 ... 1, openBelow: true)
        try OptionCheck.integer(slots, "--slots", 1 ... 4_096)
        try OptionCheck.integer(repeats, "--repeats", 1 ... 1_000)
    }

    func run() throws {
        if let jsonOut { try OutputCheck.writable(jsonOut, option: "--json-out") }
        let benchmark = RolloutBenchmark(config: config, threads: try OptionCheck.threadList(threads), prompts: prompts, samples: samples,
                                         maxNewTokens: maxNewTokens, eosProbability: eosProbability, slots: slots, repeats: repeats, jsonOut: jsonOut)
        try bench { try benchmark.run() }
    }
}

struct TokenizeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Time encoding and decoding of a long mixed text (words, digits, whitespace runs, unicode, emoji)."
    )
    @Option(help: "Tokenizer: tokenizer.bin, tokenizer.model, tokenizer.json or a Hugging Face model directory.")
    var tokenizer: String
    @Option(help: "Size of the text in kilobytes.")
    var kilobytes: Int = 100

    func validate() throws {
        try OptionCheck.integer(kilobytes, "--kilobytes", 1 ... 1 << 20)
    }

    func run() throws {
        let benchmark = TokenizeBenchmark(tokenizer: tokenizer, kilobytes: kilobytes)
        try bench { try benchmark.run() }
    }
}

struct LoadBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Time and peak memory of loading a model: a Hugging Face bfloat16 directory against the same model as a llama2.c file, each in a fresh process."
    )
    @Option(help: "Model shape: 15M, gqa or 110M.")
    var config = "110M"
    @Option(help: "Loads per format (the best is kept).")
    var rounds = 3
    @Option(help: "Load this checkpoint in this process and print one JSON line (the child's side).")
    var once: String?

    func validate() throws {
        try OptionCheck.integer(rounds, "--rounds", 1 ... 100)
    }

    func run() throws {
        if let once {
            try bench {
                let result = try LoadBenchmark.once(path: once)
                print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
            }
            return
        }
        let benchmark = LoadBenchmark(config: config, rounds: rounds)
        try bench { try benchmark.run() }
    }
}

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Training-step throughput (forward, backward, AdamW) on a random 15M model at 8x256, and reward-model forward at 16x256, against PyTorch measured in the same run (--torch).",
        discussion: """
        Every figure is the best of --repeats steps; our steps and PyTorch's alternate, and each ratio to \
        PyTorch is followed by the ratio of each round and their median (our first round also touches its \
        buffers for the first time). PyTorch trains the same weights (llama2.c's model.py layout, SDPA \
        attention, torch.optim.AdamW) and scores under inference_mode. Without --torch the bench prints \
        our figures alone.
        """
    )
    @Option(help: "Config: 15M, gqa or 110M.")
    var config: String = "15M"
    @Option(help: "Thread counts to measure, comma-separated.")
    var threads: String = "1,2"
    @Option(help: "Steps per figure; the best is reported.")
    var repeats: Int = 3
    @Option(help: "Sequences per training batch.")
    var batch: Int = 8
    @Option(help: "Sequences per reward-model batch.")
    var rmBatch: Int = 16
    @Option(help: "Tokens per sequence.")
    var length: Int = 256
    @Flag(help: "Measure only the reward-model forward.")
    var rewardModelOnly = false
    @Option(help: "Also measure a LoRA step of this rank (alpha 2x rank, adapters on wq, wk, wv, wo; the base frozen), against full fine-tuning: time, trained values, optimizer state and the bytes a weight sync of the adapters carries. 0: none.")
    var loraRank: Int = 0
    @OptionGroup var baselines: BaselineOptions

    func validate() throws {
        _ = try OptionCheck.threadList(threads)
        try OptionCheck.integer(loraRank, "--lora-rank", 0 ... 4_096)
        do { _ = try benchConfig(config) } catch { throw ValidationError("\(error)") }
        try OptionCheck.integer(repeats, "--repeats", 1 ... 1_000)
        try OptionCheck.integer(batch, "--batch", 1 ... 65_536)
        try OptionCheck.integer(rmBatch, "--rm-batch", 1 ... 65_536)
        try OptionCheck.integer(length, "--length", 2 ... 1 << 20)
    }

    func run() throws {
        let benchmark = TrainBenchmark(config: config, threads: try OptionCheck.threadList(threads), repeats: repeats, batch: batch, rmBatch: rmBatch, length: length, rewardModelOnly: rewardModelOnly, loraRank: loraRank, baselines: baselines.settings)
        try bench { try benchmark.run() }
    }
}

struct TransportBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport",
        abstract: "Remote-call round trip (p50, p99), weight transfer (GB/s) and dispatch capacity (tasks/s) on 127.0.0.1."
    )
    @Option(help: "Round trips to time.")
    var count: Int = 5000
    @Option(help: "Consumers pulling the weights at once.")
    var consumers: Int = 2
    @Option(help: "Workers the dispatch benchmark routes to.")
    var workers: Int = 32
    @Option(help: "Tasks the dispatch benchmark routes.")
    var tasks: Int = 60_000

    func validate() throws {
        try OptionCheck.integer(count, "--count", 1 ... 10_000_000)
        try OptionCheck.integer(consumers, "--consumers", 1 ... 256)
        try OptionCheck.integer(workers, "--workers", 1 ... 4_096)
        try OptionCheck.integer(tasks, "--tasks", 1 ... 10_000_000)
    }

    func run() throws {
        let benchmark = TransportBenchmark(count: count, consumers: consumers, workers: workers, tasks: tasks)
        try bench { try benchmark.run() }
    }
}

struct FanoutBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "A rejection-sampling round's sampling over 1 and 2 generator processes (the ratio), and how many generators one coordinator can feed."
    )
    @Option(help: "Policy checkpoint: a Hugging Face model directory, or a file with tokenizer.bin beside it.")
    var checkpoint = "models/chat-world/sft.bin"
    @Option(help: "Prompts of the round (the embedded task's training prompts).")
    var prompts = 512
    @Option(help: "Samples per prompt (K).")
    var samples = 8
    @Option(help: "Most new tokens per sample.")
    var maxNewTokens = 96
    @Option(help: "Sampling temperature.")
    var temperature: Float = 1.0
    @Option(help: "Generator processes of the fan-out.")
    var generators = 2

    func validate() throws {
        try OptionCheck.integer(prompts, "--prompts", 1 ... 1_000_000)
        try OptionCheck.integer(samples, "--samples", 1 ... 1_024)
        try OptionCheck.integer(maxNewTokens, "--max-new-tokens", 1 ... 1_000_000)
        try OptionCheck.number(temperature, "--temperature", 0 ... 100)
        try OptionCheck.integer(generators, "--generators", 1 ... 256)
    }

    func run() throws {
        let benchmark = FanoutBenchmark(checkpoint: checkpoint, prompts: prompts, samples: samples, maxNewTokens: maxNewTokens, temperature: temperature, generators: generators)
        try bench { try benchmark.run() }
    }
}
