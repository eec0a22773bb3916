import ArgumentParser
import Foundation
import LlamaCore

/// `rlhf tokenize`: JSON lines in, JSON lines with ids out.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Read {\"text\": ...} JSON lines on stdin, write {\"text\": ..., \"ids\": [...]} per line."
    )

    @Option(help: "Tokenizer: llama2.c tokenizer.bin, SentencePiece tokenizer.model, Hugging Face tokenizer.json or model directory.")
    var tokenizer: String
    @Flag(help: "Prepend the BOS id.")
    var bos = false
    @Flag(help: "Append the EOS id.")
    var eos = false

    func run() throws {
        let tok: Tokenizer
        do { tok = try Tokenizer(path: tokenizer) } catch { throw cliFailure(error) }
        var lineNumber = 0
        var failures = 0
        while let line = readLine(strippingNewline: true) {
            lineNumber += 1
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let text = object["text"] as? String else {
                printError("error: stdin line \(lineNumber): expected a JSON object with a string \"text\"; skipped")
                failures += 1
                continue
            }
            let ids = tok.encode(text, bos: bos, eos: eos)
            print(jsonLine(["text": text, "ids": ids.map(Int.init)]))
        }
        if failures > 0 {
            printError("error: \(failures) of \(lineNumber) lines were malformed")
            throw ExitCode.failure
        }
    }
}
