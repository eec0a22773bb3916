#if canImport(Glibc)
import Glibc
#endif

/// Host addresses a worker advertises to its peers.
public enum Network {
    /// The local IPv4 address this host uses to reach `endpoint` (`tcp://HOST:PORT`): what peers that
    /// reach the coordinator can reach us at. Found by connecting a UDP socket (no packet is sent)
    /// and reading its local address.
    public static func localAddress(toward endpoint: String) throws -> String {
        guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":") else {
            throw TransportError("endpoint \(endpoint) is not tcp://HOST:PORT")
        }
        let host = String(endpoint[endpoint.index(endpoint.startIndex, offsetBy: 6)..<colon])
        let port = String(endpoint[endpoint.index(after: colon)...])
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, port == "*" ? "9" : port, &hints, &found) == 0, let info = found else {
            throw TransportError("cannot resolve \(host)")
        }
        defer { freeaddrinfo(found) }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TransportError("socket") }
        defer { close(fd) }
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else { throw TransportError("no route to \(host)") }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw TransportError("getsockname") }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &local.sin_addr, &text, socklen_t(text.count)) != nil else { throw TransportError("inet_ntop") }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
