import Distributed
import Foundation
import Synchronization
import Transport
import Wire

extension Coordinator {
    /// Carries a call on a role pool: queues it as a task (a REMOTE_CALL for the role's actor) with the
    /// dispatcher, which sends it to the worker it picks, and re-sends it if that worker dies; the
    /// answer, once accepted (fenced by epoch, journaled first), resumes the caller. A call the
    /// journal of an earlier life already answered is answered from there and not sent.
    final class PoolRouter: CallRouter {
        /// The request id of the call made in this task (set by `fanOut`, which numbers calls in part order).
        @TaskLocal static var requestID: UInt64?

        private let shared: Shared
        private let loop: PollLoop
        private let socket: PollLoop.SocketID

        init(shared: Shared, loop: PollLoop, socket: PollLoop.SocketID) {
            self.shared = shared
            self.loop = loop
            self.socket = socket
        }

        func route(_ call: OutgoingCall) async throws -> WirePayload {
            guard let role = call.actor.poolRole else { throw RemoteCallError.transport("\(call.actor) is not a role pool") }
            let shared = shared
            let id = PoolRouter.requestID ?? shared.state.withLock { s in
                s.nextTaskID += 1
                return s.nextTaskID
            }
            var message = try ClusterActorSystem.callMessage(actor: role.rawValue, target: call.target, arguments: call.arguments,
                                                             timeoutMilliseconds: 0, requestID: id)
            message.sender = "coordinator"
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<WirePayload, Error>) in
                    let ready = shared.state.withLock { s -> Result<WirePayload, Error>? in
                        if Task.isCancelled { return .failure(CancellationError()) }
                        // Accepted by an earlier life of the coordinator (journal): answered from there.
                        if let frames = s.recovered.removeValue(forKey: id), let result = try? WireMessage.decode(frames.map { [UInt8]($0) }) {
                            return Result { try ClusterActorSystem.replyValue(result) }
                        }
                        s.waiters[id] = waiter
                        s.dispatcher.enqueue(requestID: id, role: role, payload: message)
                        return nil
                    }
                    if let ready {
                        waiter.resume(with: ready)
                    } else {
                        Coordinator.pump(shared: shared, loop: loop, socket: socket)
                    }
                }
            } onCancel: {
                shared.state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
            }
        }
    }
}
