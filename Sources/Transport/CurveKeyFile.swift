import Foundation

/// Reading the key files `rlhf keys generate` writes.
public enum CurveKeyFile {
    /// A key file that cannot be read or holds no valid key, by path.
    public struct Failure: Error, CustomStringConvertible {
        public let path: String
        public let reason: String
        public init(path: String, reason: String) {
            self.path = path
            self.reason = reason
        }
        public var description: String { "\(path): \(reason)" }
    }

    /// The Z85 keys on the lines of `path` (each 40 characters).
    public static func keys(_ path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Failure(path: path, reason: "cannot read the key file") }
        let keys = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !keys.isEmpty, keys.allSatisfy({ $0.count == 40 }) else {
            throw Failure(path: path, reason: "expected Z85 keys of 40 characters, one per line (rlhf keys generate writes them)")
        }
        return keys
    }

    /// A key pair from a `.key` file (public line, secret line).
    public static func pair(_ path: String) throws -> CurveKeyPair {
        let k = try keys(path)
        guard k.count == 2 else { throw Failure(path: path, reason: "a .key file holds the public key, then the secret key") }
        return CurveKeyPair(publicKey: k[0], secretKey: k[1])
    }

    /// The public key of a `.pub` (or `.key`) file.
    public static func publicKey(_ path: String) throws -> String { try keys(path)[0] }
}

extension CurveKeyFile {
    /// Client keys: the server's public key file and this peer's `.key` file.
    public static func client(serverPublicKeyFile: String, keyFile: String) throws -> Curve {
        let pair = try pair(keyFile)
        return .client(serverKey: try publicKey(serverPublicKeyFile), publicKey: pair.publicKey, secretKey: pair.secretKey)
    }

    /// Server keys: the server's `.key` file and the public key files of the clients it admits.
    public static func server(keyFile: String, admitting clientFiles: [String]) throws -> CurveServerKeys {
        guard !clientFiles.isEmpty else { throw Failure(path: keyFile, reason: "a CURVE server needs the public keys of the clients it admits") }
        return CurveServerKeys(secretKey: try pair(keyFile).secretKey, clients: Set(try clientFiles.map { try publicKey($0) }))
    }
}
