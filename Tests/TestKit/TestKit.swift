import Foundation
import Wire

/// What the test targets share: the built `rlhf`, processes started from it, waiting on a condition,
/// ports the OS assigns, and the fixture files.
public enum TestKit {
    /// The `rlhf` built beside the test runner (the products share one build directory).
    public static var executable: URL {
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: runner).deletingLastPathComponent().appendingPathComponent("rlhf")
    }

    /// The repository's root directory.
    public static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    /// The fixture copies the tests read (`Tests/LlamaCoreTests/Resources`): e.g. `fixture("models/tiny-gqa.bin")`.
    public static func fixture(_ path: String) -> String { repository + "/Tests/LlamaCoreTests/Resources/" + path }

    /// A fresh path for a test's files, `NAME-UUID` in this test process's scratch directory (nothing is
    /// made at the path). The scratch directory goes when the process exits, so a test run leaves nothing
    /// behind (the integration tests write over a gigabyte of run directories, the unit tests thousands of
    /// small files); set `RLHF_KEEP_TEST_FILES=1` to keep it, e.g. to read a failed run's logs.
    public static func scratch(_ name: String) -> String { scratchDirectory + "/\(name)-\(UUID().uuidString)" }

    /// `swiftrlhf-tests-PID` in the temporary directory: made on first use, removed at exit.
    private static let scratchDirectory: String = {
        let path = NSTemporaryDirectory() + "swiftrlhf-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        if ProcessInfo.processInfo.environment["RLHF_KEEP_TEST_FILES"] == nil {
            atexit { try? FileManager.default.removeItem(atPath: TestKit.scratchDirectory) }
        }
        return path
    }()

    /// Starts `rlhf ARGUMENTS`, its output discarded, or appended to `log` when given; `environment` adds to
    /// (or overrides) this process's.
    public static func spawn(_ arguments: [String], log: String? = nil, environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
        }
        if let log {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            p.standardError = p.standardOutput
        } else {
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        return p
    }

    /// Runs the program at `path` with `arguments` to its end; its status and output (standard output and
    /// error together). The output goes through a file, not a pipe: a daemon the program starts may keep
    /// a pipe open for ever. A program still running after `timeoutSeconds` (or whose end Foundation
    /// cannot see: it learns of a child's exit when every holder of a socket the child inherits has closed
    /// it, daemons the child started included) is signalled and reported as status 124, so a test fails
    /// with what it ran instead of waiting for ever.
    @discardableResult
    public static func run(_ path: String, _ arguments: [String], timeoutSeconds: Double = 300) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let file = scratch("testkit-run") + ".out"
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard FileManager.default.createFile(atPath: file, contents: nil), let output = FileHandle(forWritingAtPath: file) else {
            return (127, "cannot write \(file)")
        }
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return (127, "\(error)") }
        let ended = waitFor(timeoutSeconds) { !process.isRunning }
        try? output.close()
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        guard ended else {
            process.terminate()
            return (124, "\(path) \(arguments.joined(separator: " ")) did not end within \(Int(timeoutSeconds)) s; its output: \(text)")
        }
        return (process.terminationStatus, text)
    }

    /// Polls `condition` every 50 ms for up to `seconds`; whether it came to hold.
    public static func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    /// A TCP port on `host` that the OS just handed out as free (bound to port 0, then released): for a
    /// test that must name its port before a process binds it.
    public static func freePort(host: String = "127.0.0.1") throws -> Int {
        struct NoPort: Error, CustomStringConvertible { let description: String }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw NoPort(description: "socket() failed (errno \(errno))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw NoPort(description: "not an IPv4 address: \(host)") }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw NoPort(description: "cannot bind \(host):0 (errno \(errno))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A GENERATE_REQUEST with a tensor frame and every envelope field set.
    public static func sampleMessage() throws -> WireMessage {
        var request = Rlhf_V1_GenerateRequest()
        var prompt = Rlhf_V1_Prompt()
        prompt.promptID = 7
        prompt.ids = [1, 450, 3, 29]
        request.prompts = [prompt]
        request.samplesPerPrompt = 4
        request.sampling.temperature = 1.2
        request.seed = 99
        request.maxNewTokens = 32
        request.stopTokens = [2]
        var message = try WireMessage(type: .generateRequest, requestID: 42, body: request,
                                      tensors: [WireTensor(name: "logprobs", floats: [-1.5, -0.25, -3])],
                                      sender: "coordinator", policyVersion: 3)
        message.round = 2
        message.step = 11
        return message
    }
}
