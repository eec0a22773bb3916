import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive hold on a run directory for one launch (`RUN_DIR/launch.lock`, an `flock` that the
/// kernel releases when the process ends, even by `kill -9`, so a crashed launch never blocks its
/// resume). The file names the holder's pid for the message a second launch gets. The descriptor is
/// close-on-exec: the workers a launch starts do not inherit the hold.
public final class RunDirectoryLock: @unchecked Sendable {
    /// Another launch holds the directory.
    public struct Held: Error, CustomStringConvertible {
        public let directory: String
        public let holder: Int32?
        public var description: String {
            let who = holder.map { "another launch (pid \($0))" } ?? "another launch"
            return "run directory \(directory) is in use by \(who): wait for it to finish, stop it"
                + (holder.map { " (kill -INT \($0))" } ?? "") + ", or choose another --run-dir"
        }
    }

    private var descriptor: Int32

    /// Takes the hold on `directory` (which must exist), or throws `Held`.
    public init(directory: String) throws {
        let path = directory + "/launch.lock"
        descriptor = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: path,
                                                               NSLocalizedDescriptionKey: "cannot open \(path): \(String(cString: strerror(errno)))"])
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            close(descriptor)
            descriptor = -1
            throw Held(directory: directory, holder: holder)
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pwrite(descriptor, pid, pid.count, 0)
    }

    /// Gives the hold up (also at deinit).
    public func release() {
        guard descriptor >= 0 else { return }
        close(descriptor)
        descriptor = -1
    }

    deinit { release() }
}
