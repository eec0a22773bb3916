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

