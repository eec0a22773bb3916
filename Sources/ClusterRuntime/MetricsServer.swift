import Foundation
import Synchronization
import Transport

/// Builds Prometheus text exposition (format 0.0.4): `# HELP` / `# TYPE` lines, then samples with
/// escaped label values.
struct PrometheusText {
    private(set) var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        let rendered = labels.keys.sorted().map { key -> String in
            let escaped = labels[key]!.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
            return "\(key)=\"\(escaped)\""
        }
        let number = value.isFinite ? (value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)")
            : value.isNaN ? "NaN" : value > 0 ? "+Inf" : "-Inf"
        text += labels.isEmpty ? "\(name) \(number)\n" : "\(name){\(rendered.joined(separator: ","))} \(number)\n"
    }
}

/// A minimal HTTP/1.0 responder on a ZeroMQ STREAM socket: `GET /metrics` gets the text of `body()`;
/// anything else a 404. One response per connection, then the connection is closed.
enum MetricsServer {
    /// Binds `bind` on `loop` and returns the endpoint bound.
    static func start(on loop: PollLoop, bind: String, body: @escaping @Sendable () -> String) throws -> String {
        let pending = Mutex<[[UInt8]: [UInt8]]>([:])
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        let (socket, bound) = try loop.open(.stream, bind: [bind]) { frames in
            guard frames.count == 2, let id = socketBox.withLock({ $0 }) else { return }
            let peer = frames[0]
            if frames[1].isEmpty { pending.withLock { $0[peer] = nil }; return } // connect or disconnect
            let request = pending.withLock { p -> [UInt8]? in
                var data = p[peer, default: []] + frames[1]
                guard data.count < 16 << 10 else { p[peer] = nil; return [] }
                let complete = data.count >= 4 && (0...(data.count - 4)).contains { data[$0...$0 + 3] == [13, 10, 13, 10] }
                if complete { p[peer] = nil } else { p[peer] = data; data = [] }
                return complete ? data : nil
            }
            guard let request else { return }
            let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
            let parts = line.split(separator: " ")
            let (status, content) = parts.count >= 2 && parts[0] == "GET" && (parts[1] == "/metrics" || parts[1] == "/")
                ? ("200 OK", body()) : ("404 Not Found", "not found: GET /metrics serves the metrics\n")
            let response = "HTTP/1.0 \(status)\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                + "Content-Length: \(content.utf8.count)\r\nConnection: close\r\n\r\n" + content
            loop.send(id, [peer, Array(response.utf8)])
            loop.send(id, [peer, []])
        }
        socketBox.withLock { $0 = socket }
        return bound.first ?? bind
    }
}
