import ArgumentParser
import Foundation
import Transport

/// `rlhf keys`: CURVE key pairs for encrypted, authenticated cluster links.
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "CURVE keys for the cluster's links.",
        subcommands: [Generate.self]
    )

    /// `rlhf keys generate --out PREFIX`: PREFIX.key (public and secret key, mode 0600) and PREFIX.pub.
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a CURVE key pair: PREFIX.key (public then secret key, Z85, mode 0600) and PREFIX.pub (public key)."
        )

        @Option(help: "Path prefix of the two files.")
        var out: String

        func run() throws {
            let pair = try CurveKeyPair.generate()
            let secret = out + ".key", publicFile = out + ".pub"
            guard FileManager.default.createFile(atPath: secret, contents: Data("\(pair.publicKey)\n\(pair.secretKey)\n".utf8),
                                                 attributes: [.posixPermissions: 0o600]),
                  FileManager.default.createFile(atPath: publicFile, contents: Data("\(pair.publicKey)\n".utf8)) else {
                throw cliFailure(CurveKeyFile.Failure(path: out, reason: "cannot write the key files"))
            }
            print("wrote \(secret) (keep it secret) and \(publicFile)")
        }
    }
}

/// Reading the key files `rlhf keys generate` writes.
enum CurveKeyFile {
    struct Failure: Error, CustomStringConvertible {
        let path: String
        let reason: String
        var description: String { "\(path): \(reason)" }
    }

    /// The Z85 keys on the lines of `path` (each 40 characters).
    static func keys(_ path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Failure(path: path, reason: "cannot read the key file") }
        let keys = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !keys.isEmpty, keys.allSatisfy({ $0.count == 40 }) else {
            throw Failure(path: path, reason: "expected Z85 keys of 40 characters, one per line (rlhf keys generate writes them)")
        }
        return keys
    }

    /// A key pair from a `.key` file (public line, secret line).
    static func pair(_ path: String) throws -> CurveKeyPair {
        let k = try keys(path)
        guard k.count == 2 else { throw Failure(path: path, reason: "a .key file holds the public key, then the secret key") }
        return CurveKeyPair(publicKey: k[0], secretKey: k[1])
    }

    /// The public key of a `.pub` (or `.key`) file.
    static func publicKey(_ path: String) throws -> String { try keys(path)[0] }
}
