import Foundation

/// The baselines a bench measures beside ours, in the same run.
public struct Baselines: Sendable {
    /// llama2.c's run.c (or a folder holding it) or its built binary.
    public var llama2c: String?
    /// A Python with torch.
    public var torch: String?

    public init(llama2c: String? = nil, torch: String? = nil) {
        self.llama2c = llama2c
        self.torch = torch
    }
}

/// PyTorch measured in the same run as our figures: a Python with torch runs `script` as a long-lived
/// child that loads the same llama2.c checkpoint and answers one JSON command per line, so its
/// measurements interleave with ours.
final class TorchBaseline {
    private let process = Process()
    private let input = Pipe(), output = Pipe()
    private let errorLog: URL
    private var buffer = Data()
    /// torch's version and the CPU capability it dispatches to (e.g. "2.13.0+cpu AVX512").
    private(set) var version = ""

    /// Starts `python` on the script with the checkpoint at `checkpoint`; waits until it has loaded.
    init(python: String, checkpoint: String, workDirectory: URL) throws {
        if python.contains("/") && !FileManager.default.isExecutableFile(atPath: python) {
            throw BenchmarkError("--torch: \(python) is not an executable Python")
        }
        let scriptURL = workDirectory.appendingPathComponent("torch_baseline.py")
        try TorchBaseline.script.write(to: scriptURL, atomically: true, encoding: .utf8)
        errorLog = workDirectory.appendingPathComponent("torch_baseline.stderr")
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: python.contains("/") ? python : "/usr/bin/env")
        process.arguments = (python.contains("/") ? [] : [python]) + [scriptURL.path, checkpoint]
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONUNBUFFERED"] = "1"
        process.environment = environment
        process.standardInput = input
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: errorLog)
        try process.run()
        let ready = try receive()
        version = (ready["torch"] as? String ?? "?") + " " + (ready["capability"] as? String ?? "")
    }

    deinit { stop() }

    /// Ends the child (closing its input ends its loop).
    func stop() {
        guard process.isRunning else { return }
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    /// Sends one command and returns its answer; an answer with `error` (or a dead child) throws with
    /// the child's message.
    func call(_ command: [String: Any]) throws -> [String: Any] {
        let data = try JSONSerialization.data(withJSONObject: command)
        input.fileHandleForWriting.write(data + Data("\n".utf8))
        return try receive()
    }

    /// The first number `key` of the answer to `command`.
    func figure(_ command: [String: Any], _ key: String) throws -> Double {
        guard let value = try call(command)[key] as? Double else {
            throw BenchmarkError("PyTorch baseline: no '\(key)' in the answer to \(command["op"] ?? "?")")
        }
        return value
    }

    private func receive() throws -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex..<newline]
                buffer = Data(buffer[buffer.index(after: newline)...])
                guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else { continue }
                if let error = object["error"] as? String { throw BenchmarkError("PyTorch baseline: \(error)") }
                return object
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty {
                process.waitUntilExit()
                let log = (try? String(contentsOf: errorLog, encoding: .utf8)) ?? ""
                let tail = log.split(separator: "\n").suffix(3).joined(separator: " | ")
                throw BenchmarkError("PyTorch baseline exited (status \(process.terminationStatus)): \(tail)")
            }
            buffer.append(chunk)
        }
    }

    /// The baseline: LLaMA as llama2.c's model.py writes it (RMSNorm, interleaved RoPE, SDPA attention
    /// with GQA, SwiGLU, tied or separate classifier), with a KV cache for decoding and Hugging Face's
    /// top-p (sort, cumulative softmax, mask) for sampling. Commands (one JSON object per line):
    /// `threads`, `decode` (batch 1 or B rows at their own positions), `train` (forward, cross-entropy,
    /// backward, AdamW), `rm` (inference-mode trunk forward and a scalar head at the last token).
    static let script = #"""
import json, math, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_interop_threads(1)


def load(path):
    with open(path, "rb") as f:
        dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("7i", f.read(28))
        data = np.fromfile(f, dtype=np.float32)
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // heads
    kvd = kv_heads * hs
    offset = 0

    def take(*shape):
        nonlocal offset
        n = int(np.prod(shape))
        t = torch.from_numpy(data[offset:offset + n].copy()).reshape(shape)
        offset += n
        return t

    w = {"emb": take(vocab, dim), "rms_att": take(layers, dim), "wq": take(layers, dim, dim),
         "wk": take(layers, kvd, dim), "wv": take(layers, kvd, dim), "wo": take(layers, dim, dim),
         "rms_ffn": take(layers, dim), "w1": take(layers, hidden, dim), "w2": take(layers, dim, hidden),
         "w3": take(layers, hidden, dim), "rms_final": take(dim)}
    offset += seq * hs  # freq_cis_real and freq_cis_imag
    w["cls"] = None if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, seq=seq)
    return cfg, w


class RMSNorm(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.clone())

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def linear(weight):
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def rope(x, cos, sin):
    # x: (B, T, H, hs) with interleaved pairs; cos/sin: (B or 1, T, 1, hs/2)
    x = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = x[..., 0], x[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3)


class Llama(torch.nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        self.cfg = cfg
        self.hs = cfg["dim"] // cfg["heads"]
        self.emb = torch.nn.Embedding(cfg["vocab"], cfg["dim"])
        with torch.no_grad():
            self.emb.weight.copy_(w["emb"])
        self.blocks = torch.nn.ModuleList()
        for l in range(cfg["layers"]):
            b = torch.nn.Module()
            b.att_norm, b.ffn_norm = RMSNorm(w["rms_att"][l]), RMSNorm(w["rms_ffn"][l])
            b.wq, b.wk, b.wv, b.wo = linear(w["wq"][l]), linear(w["wk"][l]), linear(w["wv"][l]), linear(w["wo"][l])
            b.w1, b.w2, b.w3 = linear(w["w1"][l]), linear(w["w2"][l]), linear(w["w3"][l])
            self.blocks.append(b)
        self.norm = RMSNorm(w["rms_final"])
        self.cls = torch.nn.Linear(cfg["dim"], cfg["vocab"], bias=False)
        if w["cls"] is None:
            self.cls.weight = self.emb.weight
        else:
            with torch.no_grad():
                self.cls.weight.copy_(w["cls"])
        freqs = 1.0 / (10000.0 ** (torch.arange(0, self.hs, 2).float() / self.hs))
        angles = torch.outer(torch.arange(cfg["seq"]).float(), freqs)
        self.cos, self.sin = torch.cos(angles), torch.sin(angles)

    def trunk(self, tokens, positions=None, cache=None):
        """tokens (B, T); positions (B,) start of each row (decode with cache) or None (training)."""
        B, T = tokens.shape
        H, KV, hs = self.cfg["heads"], self.cfg["kv_heads"], self.hs
        x = self.emb(tokens)
        if positions is None:
            cos, sin = self.cos[:T][None, :, None, :], self.sin[:T][None, :, None, :]
        else:
            index = positions[:, None] + torch.arange(T)[None, :]
            cos, sin = self.cos[index][:, :, None, :], self.sin[index][:, :, None, :]
        for l, b in enumerate(self.blocks):
            h = b.att_norm(x)
            q = rope(b.wq(h).view(B, T, H, hs), cos, sin).transpose(1, 2)
            k = rope(b.wk(h).view(B, T, KV, hs), cos, sin).transpose(1, 2)
            v = b.wv(h).view(B, T, KV, hs).transpose(1, 2)
            if cache is None:
                if KV != H:
                    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                keys, values = cache[l]
                rows = torch.arange(B)[:, None]
                index = positions[:, None] + torch.arange(T)[None, :]
                keys[rows, :, index] = k.transpose(1, 2)
                values[rows, :, index] = v.transpose(1, 2)
                length = int(positions.max()) + T
                k, v = keys[:, :, :length], values[:, :, :length]
                if KV != H:
                    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
                visible = torch.arange(length)[None, None, :] <= index[:, :, None]
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=visible[:, None, :, :])
            x = x + b.wo(o.transpose(1, 2).reshape(B, T, -1))
            h = b.ffn_norm(x)
            x = x + b.w2(F.silu(b.w1(h)) * b.w3(h))
        return self.norm(x)

    def forward(self, tokens, positions=None, cache=None):
        return self.cls(self.trunk(tokens, positions, cache))


def sample(logits, temperature, top_p, generator):
    """Hugging Face's TemperatureLogitsWarper and TopPLogitsWarper, then a multinomial draw; returns
    the ids and their log-probabilities under the model (temperature 1)."""
    logprobs = torch.log_softmax(logits, dim=-1)
    scores = logits / temperature
    if top_p < 1:
        sorted_scores, sorted_ids = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, sorted_ids, remove), -float("inf"))
    ids = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)
    return ids, logprobs.gather(-1, ids)


def decode(model, batch, tokens, top_p, prompt_max, seed):
    """batch rows with prompts of 1..prompt_max tokens (prefilled one row at a time), then `tokens`
    decode steps of all rows at their own positions. Returns decode-only tokens per second."""
    cfg = model.cfg
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, prompt_max + 1, (batch,), generator=generator)
    kvd = cfg["kv_heads"] * model.hs
    cache = [(torch.zeros(batch, cfg["kv_heads"], cfg["seq"], model.hs), torch.zeros(batch, cfg["kv_heads"], cfg["seq"], model.hs))
             for _ in range(cfg["layers"])]
    with torch.inference_mode():
        last = []
        for r in range(batch):
            prompt = torch.randint(3, cfg["vocab"], (1, int(lengths[r])), generator=generator)
            prompt[0, 0] = 1
            row_cache = [(k[r:r + 1], v[r:r + 1]) for k, v in cache]
            logits = model(prompt, torch.zeros(1, dtype=torch.long), row_cache)[:, -1]
            last.append(sample(logits, 1.0, top_p, generator)[0])
        ids = torch.cat(last)
        positions = lengths.clone()
        start = time.perf_counter()
        for _ in range(tokens - 1):
            logits = model(ids, positions, cache)[:, -1]
            ids, _ = sample(logits, 1.0, top_p, generator)
            positions += 1
        seconds = time.perf_counter() - start
    return batch * (tokens - 1) / seconds


def main():
    cfg, weights = load(sys.argv[1])
    model = Llama(cfg, weights)
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "capability": torch.backends.cpu.get_cpu_capability()}), flush=True)
    optimizer = None
    for line in sys.stdin:
        try:
            c = json.loads(line)
            op = c["op"]
            if op == "threads":
                torch.set_num_threads(int(c["n"]))
                answer = {"threads": float(torch.get_num_threads())}
            elif op == "decode":
                answer = {"tps": decode(model, int(c["batch"]), int(c["tokens"]), float(c["top_p"]),
                                        int(c["prompt_max"]), int(c["seed"]))}
            elif op == "train":
                g = torch.Generator().manual_seed(int(c["seed"]))
                data = torch.randint(3, cfg["vocab"], (int(c["batch"]), int(c["length"])), generator=g)
                data[:, 0] = 1
                model.train()
                if optimizer is None:
                    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                # autocast: bfloat16 matrix products on the float32 weights (PyTorch's CPU mixed precision).
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(c.get("autocast", False))):
                    logits = model(data[:, :-1])
                    loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]).float(), data[:, 1:].reshape(-1))
                loss.backward()
                optimizer.step()
                seconds = time.perf_counter() - start
                answer = {"tps": data.shape[0] * (data.shape[1] - 1) / seconds, "loss": loss.item()}
            elif op == "rm":
                g = torch.Generator().manual_seed(int(c["seed"]))
                data = torch.randint(3, cfg["vocab"], (int(c["batch"]), int(c["length"])), generator=g)
                data[:, 0] = 1
                head = torch.nn.Linear(cfg["dim"], 1, bias=False)
                with torch.inference_mode():
                    start = time.perf_counter()
                    scores = head(model.trunk(data)[:, -1])
                    seconds = time.perf_counter() - start
                answer = {"tps": data.numel() / seconds, "mean": float(scores.mean())}
            else:
                answer = {"error": "unknown op " + op}
        except Exception as e:  # reported to the bench, which names it
            answer = {"error": type(e).__name__ + ": " + str(e)}
        print(json.dumps(answer), flush=True)


main()
"""#
}

/// llama2.c's run.c, built from source (`gcc -Ofast -march=native -fopenmp`) or given as a binary, run
/// on a llama2.c checkpoint; its own `achieved tok/s` line is the figure.
struct Llama2cBaseline {
    let binary: String

    /// `path` is run.c, a folder holding it, or a built binary.
    init(path: String, workDirectory: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw BenchmarkError("--llama2c: no such file or folder: \(path)")
        }
        let source = isDirectory.boolValue ? (path as NSString).appendingPathComponent("run.c") : path
        guard source.hasSuffix(".c") else { binary = path; return }
        guard FileManager.default.fileExists(atPath: source) else { throw BenchmarkError("--llama2c: no run.c in \(path)") }
        let output = workDirectory.appendingPathComponent("llama2c-run").path
        let compile = Process()
        compile.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        compile.arguments = ["gcc", "-Ofast", "-march=native", "-fopenmp", source, "-o", output, "-lm"]
        try compile.run()
        compile.waitUntilExit()
        guard compile.terminationStatus == 0 else { throw BenchmarkError("--llama2c: gcc could not build \(source)") }
        binary = output
    }

    /// Decode tokens per second generating `steps` positions from BOS at temperature 1, top-p off
    /// (plain multinomial, as our batch-1 figure), on `threads` OpenMP threads.
    func tokensPerSecond(checkpoint: String, tokenizer: String, steps: Int, threads: Int, seed: Int) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [checkpoint, "-z", tokenizer, "-t", "1.0", "-p", "1.0", "-n", "\(steps)", "-s", "\(seed + 1)"]
        var environment = ProcessInfo.processInfo.environment
        environment["OMP_NUM_THREADS"] = "\(threads)"
        process.environment = environment
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("achieved tok/s:") }),
              let value = Double(line.dropFirst("achieved tok/s:".count).trimmingCharacters(in: .whitespaces)) else {
            throw BenchmarkError("llama2.c printed no 'achieved tok/s' (status \(process.terminationStatus)): \(text.suffix(300))")
        }
        return value
    }

    /// A tokenizer.bin of `vocabSize` pieces for run.c (which only needs one piece per id to print).
    static func writeTokenizer(vocabSize: Int, to path: String) throws {
        var bytes: [UInt8] = []
        func int32(_ v: Int32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        func float32(_ v: Float) { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        int32(16)
        for id in 0..<vocabSize {
            let piece: [UInt8] = switch id {
            case 0: Array("<unk>".utf8)
            case 1: Array("<s>".utf8)
            case 2: Array("</s>".utf8)
            default: Array("t\(id) ".utf8)
            }
            float32(Float(-id))
            int32(Int32(piece.count))
            bytes.append(contentsOf: piece)
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}
