// `distill selftest`: programs the integration tests run under mpirun to exercise the collectives.
// Each checks its results against values every rank can compute on its own, prints one line per rank
// on failure and "… ok" on rank 0 on success.
import ArgumentParser
import Collectives
import Distillation
import Foundation
import Models
import Tensors

struct SelfTest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Distributed self-tests of the collectives (run under mpirun; used by the test suite).",
        shouldDisplay: false,
        subcommands: [SelfTestCollectives.self, SelfTestFeatureMethods.self, SelfTestFailure.self, SelfTestLoop.self])
}

/// Deterministic per-rank values: element i of rank r's buffer of `tag`.
func value(_ tag: Int, _ r: Int, _ i: Int) -> Float { Float((tag * 131 + r * 17 + i * 7) % 1000) / 100 - 5 }

struct SelfTestCollectives: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "collectives",
        abstract: "Every collective with odd and empty sizes, the differentiable collectives against one process, placement, the ring exchange, gradient sync.")

    @Flag(help: "Fingerprint every collective.") var checkCollectives = false

    func run() throws {
        if checkCollectives { CollectiveOptions.checkCollectives = true }
        let comm = try MPICommunicator.world()
        let R = comm.size, me = comm.rank
        var failures: [String] = []
        func expect(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { failures.append(what()) } }

        // allReduce on floats, doubles and integers, with empty and non-power-of-two sizes.
        for (tag, n) in [0, 1, 7, 1000, 100_003].enumerated() {
            for op in [ReduceOp.sum, .max, .min] {
                let t = Tensor(shape: [n], values: (0..<n).map { value(tag, me, $0) })
                try comm.allReduce(t, op: op)
                for i in Set([0, n / 2, max(n - 1, 0)]) where i < n {
                    let vals = (0..<R).map { value(tag, $0, i) }
                    let want = op == .sum ? vals.reduce(0, +) : op == .max ? vals.max()! : vals.min()!
                    expect(abs(t.data[i] - want) <= 1e-4 * max(1, abs(want)), "allReduce(\(op)) n=\(n) i=\(i): \(t.data[i]) vs \(want)")
                }
            }
        }
        var d: [Double] = [Double(me), 1.5, -Double(me)]
        try comm.allReduce(&d, op: .sum)
        expect(d == [Double(R * (R - 1) / 2), 1.5 * Double(R), -Double(R * (R - 1) / 2)], "allReduce(double) \(d)")
        var iv: [Int64] = [Int64(me), Int64(me) * 1_000_000_000_000]
        try comm.allReduce(&iv, op: .max)
        expect(iv == [Int64(R - 1), Int64(R - 1) * 1_000_000_000_000], "allReduce(int64) \(iv)")

        // allGather, equal and variable counts (including ranks sending nothing).
        for (tag, n) in [0, 3, 1001].enumerated() {
            let mine = (0..<n).map { value(10 + tag, me, $0) }
            var out = [Float](repeating: .nan, count: n * R)
            try mine.withUnsafeBufferPointer { m in try out.withUnsafeMutableBufferPointer { o in
                try comm.allGather(m.baseAddress!, count: n, into: o.baseAddress!) } }
            expect(out == (0..<R).flatMap { r in (0..<n).map { value(10 + tag, r, $0) } }, "allGather n=\(n)")
        }
        let counts = (0..<R).map { ($0 * 5 + 2) % 4 }  // 2, 3, 0, 1, ...
        let mine = (0..<counts[me]).map { value(20, me, $0) }
        var outV = [Float](repeating: .nan, count: counts.reduce(0, +))
        try mine.withUnsafeBufferPointer { m in try outV.withUnsafeMutableBufferPointer { o in
            try comm.allGather(m.baseAddress ?? UnsafePointer(o.baseAddress!), count: counts[me], counts: counts, into: o.baseAddress!) } }
        expect(outV == (0..<R).flatMap { r in (0..<counts[r]).map { value(20, r, $0) } }, "allGather(variable) counts \(counts)")

        // reduceScatter: every rank's vector summed, each rank keeping its block (of the same uneven counts, one
        // empty); values are small integers, so the sums are exact in any order.
        let total = counts.reduce(0, +)
        let vector = (0..<total).map { Float((me * 3 + $0 * 5) % 7) }
        var block = [Float](repeating: .nan, count: max(counts[me], 1))
        try vector.withUnsafeBufferPointer { v in try block.withUnsafeMutableBufferPointer { b in
            try comm.reduceScatter(v.baseAddress!, counts: counts, into: b.baseAddress!, op: .sum) } }
        let start = counts[..<me].reduce(0, +)
        func summed(_ i: Int) -> Float {
            var sum: Float = 0
            for r in 0..<R { sum += Float((r * 3 + i * 5) % 7) }
            return sum
        }
        let expected = (start..<(start + counts[me])).map(summed)
        expect(Array(block.prefix(counts[me])) == expected, "reduceScatter counts \(counts): \(block.prefix(counts[me])) vs \(expected)")

        // broadcast from every root, floats and bytes; barrier.
        for root in 0..<R {
            let t = Tensor(shape: [5], values: (0..<5).map { value(30, me, $0) })
            try comm.broadcast(t.data, count: 5, root: root)
            expect(t.array == (0..<5).map { value(30, root, $0) }, "broadcast root \(root)")
            var bytes = [UInt8](repeating: UInt8(me), count: 3)
            try comm.broadcast(bytes: &bytes, root: root)
            expect(bytes == [UInt8](repeating: UInt8(root), count: 3), "broadcast(bytes) root \(root)")
        }
        try comm.barrier()

        // split into even and odd ranks.
        let sub = try comm.split(color: me % 2, key: me)
        var one: [Int64] = [1, Int64(me)]
        try sub.allReduce(&one, op: .sum)
        let group = (0..<R).filter { $0 % 2 == me % 2 }
        expect(sub.size == group.count && sub.rank == group.firstIndex(of: me)! && one == [Int64(group.count), Int64(group.reduce(0, +))],
               "split: size \(sub.size) rank \(sub.rank) sums \(one)")

        failures += try checkDifferentiable(comm)
        failures += try checkPlacementAndSync(comm)
        failures += try checkAggregatedMaps(comm)

        if !failures.isEmpty {
            for f in failures { printError("rank \(me): FAIL \(f)") }
            throw ExitCode(1)
        }
        try comm.barrier()
        if me == 0 { print("selftest collectives: ok (\(R) rank\(R == 1 ? "" : "s"))") }
        MPICommunicator.finalize()
    }

    /// Σ_r [Σ allGather(x)·C_r + Σ allReduceSum(x)²·D_r] on R ranks against the same objective in one process,
    /// and the collective rule: graphs whose ranks reach the collectives differently give the same gradients.
    func checkDifferentiable(_ comm: Communicator) throws -> [String] {
        let R = comm.size, me = comm.rank
        func x(_ r: Int) -> Tensor { Tensor(shape: [3, 4], values: (0..<12).map { value(40, r, $0) }) }
        func c(_ r: Int) -> Tensor { Tensor(shape: [R, 3, 4], values: (0..<(R * 12)).map { value(41, r, $0) }) }
        func dd(_ r: Int) -> Tensor { Tensor(shape: [3, 4], values: (0..<12).map { value(42, r, $0) * 0.1 }) }
        // Which collectives rank r's objective reads: all of them (0), only the gather (1), only the sum (2).
        // Kind 3 reads both, the sum through a longer chain, so its graph reaches them in another order.
        let objectives: [(String, (Int) -> Int)] = [("every rank reads both collectives", { _ in 0 }),
                                                   ("rank 0 reads only the sum, the others only the gather", { $0 == 0 ? 2 : 1 }),
                                                   ("ranks reach the collectives through different local shapes", { $0 % 2 == 0 ? 0 : 3 })]
        func term(_ r: Int, kind: Int, g: Tensor, s: Tensor) -> Tensor {
            let gather = (g * c(r)).sum(), sum = (s.square() * dd(r)).sum()
            switch kind {
            case 1: return gather
            case 2: return sum
            case 3: return (((s * 2).exp() * 0.01).sum() + sum) + gather
            default: return gather + sum
            }
        }
        var failures: [String] = []
        for (what, kind) in objectives {
            // Distributed: each rank owns x_me and computes its own term.
            let xm = x(me)
            xm.requiresGrad = true
            let g = try allGather(xm, on: comm), s = try allReduceSum(xm, on: comm)
            term(me, kind: kind(me), g: g, s: s).backward()
            // One process: every x_r as a leaf, the whole objective.
            let xs = (0..<R).map { r -> Tensor in let t = x(r); t.requiresGrad = true; return t }
            let G = stack(xs), S = xs.dropFirst().reduce(xs[0]) { $0 + $1 }
            (0..<R).map { r in term(r, kind: kind(r), g: G, s: S) }.reduce(Tensor(scalar: 0)) { $0 + $1 }.backward()
            let want = xs[me].grad!.array, got = xm.grad?.array ?? [Float](repeating: 0, count: 12)
            if !zip(got, want).allSatisfy({ abs($0 - $1) <= 1e-3 * max(1, abs($1)) }) {
                failures.append("differentiable collectives (\(what)): gradient \(got.prefix(4)) vs one process \(want.prefix(4))")
            }
        }
        return failures
    }

    /// OKDHP's dense path (maps [N, H, W, K] aggregated by the FAU, JointsMSE and the pixel-wise KL to an ensemble
    /// that is not detached) for 3 branches on these ranks against one process hosting all three (every rank runs
    /// that one on a communicator of its own): the objective, each branch map's gradient, and the summed gradients of
    /// the replicated shared feature and aggregation unit.
    func checkAggregatedMaps(_ comm: Communicator) throws -> [String] {
        let peers = 3, R = comm.size
        guard R <= peers else { return [] }
        func run(on c: Communicator) throws -> (loss: Float, maps: [Int: [Float]], shared: [[Float]]) {
            let placement = try PeerPlacement(peers: peers, ranks: c.size, rank: c.rank)
            var g = Generator(seed: 5)
            let fau = FeatureAggregationUnit(channels: 4, hidden: 6, outputs: 3, branches: peers, generator: &g)
            let method = OKDHP(fau: fau, rampUpEpochs: 0)
            let models = try placement.localPeers.map { _ in try ModelZoo.make("resnet8", classes: 3, inChannels: 1, generator: &g) }
            let cohort = Cohort(placement: placement, comm: c, models: models, stem: nil)
            let maps = placement.localPeers.map { p in Tensor(shape: [2, 5, 4, 3], values: (0..<120).map { value(70, p, $0) * 0.2 }, requiresGrad: true) }
            let x = Tensor(shape: [2, 6, 6, 4], values: (0..<288).map { value(71, 0, $0) * 0.2 }, requiresGrad: true)
            let target = Tensor(shape: [2, 5, 4, 3], values: (0..<120).map { value(72, 0, $0) * 0.1 })
            let r = try method.objective(local: maps, shared: x, target: .maps(target), epoch: 0, cohort: cohort)
            r.objective.backward()
            var loss = [Double(r.objective.item)]
            try c.allReduce(&loss, op: .sum)
            // A rank has no gradient for the FAU paths another rank computes.
            var shared = [x.grad!] + fau.namedParameters().map { $0.1.value.grad ?? Tensor(zeros: $0.1.value.shape) }
            shared = try shared.map { t in let u = t.copy(); try c.allReduce(u, op: .sum); return u }
            return (Float(loss[0]), Dictionary(uniqueKeysWithValues: zip(placement.localPeers, maps.map { $0.grad!.array })), shared.map(\.array))
        }
        let alone = try run(on: try comm.split(color: comm.rank, key: 0))
        let spread = try run(on: comm)
        var failures: [String] = []
        func close(_ a: [Float], _ b: [Float]) -> Bool { zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($0)) } && a.count == b.count }
        if !close([alone.loss], [spread.loss]) { failures.append("okdhp maps on \(R) ranks: objective \(spread.loss) vs \(alone.loss) in one process") }
        for (p, grad) in spread.maps where !close(grad, alone.maps[p]!) { failures.append("okdhp maps on \(R) ranks: branch \(p)'s map gradient differs") }
        for (i, (a, b)) in zip(alone.shared, spread.shared).enumerated() where !close(a, b) {
            failures.append("okdhp maps on \(R) ranks: replicated gradient \(i) (0 the shared feature, then the unit's) differs")
        }
        return failures
    }

    func checkPlacementAndSync(_ comm: Communicator) throws -> [String] {
        let R = comm.size, me = comm.rank
        var failures: [String] = []
        // Divisible and uneven placements; values, and gradients of Σ_p w_{r,p}·peer_p against one process.
        for peers in Set([R, 2 * R, R + 1, 2 * R + 1]).sorted() {
            let placement = try PeerPlacement(peers: peers, ranks: R, rank: me)
            func peer(_ p: Int) -> Tensor { Tensor(shape: [2, 3], values: (0..<6).map { value(50, p, $0) }, requiresGrad: true) }
            func weight(_ r: Int, _ p: Int) -> Float { Float((r * 7 + p * 3) % 5) - 2 }
            let local = placement.localPeers.map(peer)
            let all = try placement.gatherPeers(local, on: comm)
            for p in 0..<peers where all[p].array != (0..<6).map({ value(50, p, $0) }) {
                failures.append("gatherPeers: peer \(p) of \(peers) has \(all[p].array)")
            }
            all.enumerated().map { ($0.element * weight(me, $0.offset)).sum() }.reduce(Tensor(scalar: 0)) { $0 + $1 }.backward()
            for (k, p) in placement.localPeers.enumerated() {
                let want = (0..<R).map { weight($0, p) }.reduce(0, +)
                if local[k].grad?.array != [Float](repeating: want, count: 6) {
                    failures.append("gatherPeers backward: peer \(p) of \(peers) on \(R) ranks has gradient \(local[k].grad?.array ?? []), expected \(want)")
                }
            }
        }
        // The ring: each peer receives its predecessor's tensor, with shapes that differ by peer, on divisible and
        // uneven placements.
        for peers in Set([R, 2 * R, R + 1, 2 * R + 1, 3]).sorted() where peers >= R {
            let placement = try PeerPlacement(peers: peers, ranks: R, rank: me)
            let shapes = (0..<peers).map { [2, $0 % 3 + 1] }
            func peer(_ p: Int) -> Tensor { Tensor(shape: shapes[p], values: (0..<(2 * (p % 3 + 1))).map { value(60, p, $0) }) }
            let got = try placement.ringPredecessors(placement.localPeers.map(peer), shapes: shapes, on: comm)
            for (k, p) in placement.localPeers.enumerated() {
                let q = (p + peers - 1) % peers
                if got[k].shape != shapes[q] || got[k].array != peer(q).array {
                    failures.append("ringPredecessors: peer \(p) of \(peers) on \(R) ranks got \(got[k].shape) \(got[k].array), expected peer \(q)'s")
                }
            }
        }
        if R > 1, (try? PeerPlacement(peers: R - 1, ranks: R, rank: me)) != nil { failures.append("placement accepted \(R - 1) peers on \(R) ranks") }
        // syncGradients: sum and mean over ranks; a tensor without a gradient receives the others' sum.
        let a = Tensor(shape: [3], values: [1, 2, 3], requiresGrad: true), b = Tensor(shape: [2], values: [0, 0], requiresGrad: true)
        a.grad = Tensor(shape: [3], values: [Float(me), 1, 2])
        if me == 0 { b.grad = Tensor(shape: [2], values: [5, 6]) }
        gradientBucketFloats = 2  // force several buckets
        try syncGradients([a, b], on: comm, mode: .sum)
        if a.grad!.array != [Float(R * (R - 1) / 2), Float(R), Float(2 * R)] || b.grad!.array != [5, 6] {
            failures.append("syncGradients(sum): \(a.grad!.array) \(b.grad!.array)")
        }
        try syncGradients([a], on: comm, mode: .mean)
        if a.grad!.array != [Float(R * (R - 1) / 2), Float(R), Float(2 * R)] { failures.append("syncGradients(mean): \(a.grad!.array)") }
        gradientBucketFloats = 1 << 20
        // Replica checks: equal weights agree; a perturbed one on the last rank is named.
        let w = Tensor(shape: [4], values: [1, 2, 3, 4]), v = Tensor(shape: [2], values: [7, 8])
        if try !checkReplicasAgree([("w", w), ("v", v)], on: comm).isEmpty { failures.append("replicas should agree") }
        if me == R - 1 && R > 1 { v.data[1] += 1e-3 }
        let differ = try checkReplicasAgree([("w", w), ("v", v)], on: comm)
        if differ != (R > 1 ? ["v"] : []) { failures.append("checkReplicasAgree named \(differ)") }
        // broadcastValues makes them agree again.
        try broadcastValues([w, v], on: comm, root: 0)
        if try !checkReplicasAgree([("w", w), ("v", v)], on: comm).isEmpty { failures.append("broadcastValues") }
        return failures
    }
}

struct SelfTestFailure: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "failure",
        abstract: "Makes one rank fail: throw an error, call a collective with a wrong size, or stall.")

    enum Kind: String, ExpressibleByArgument { case `throw`, mismatch, stall }

    @Option(help: "throw | mismatch | stall") var kind: Kind
    @Option(help: "The rank that misbehaves.") var rank = 1
    @Option(help: "Iteration at which it misbehaves.") var at = 3

    func run() throws {
        let comm = try MPICommunicator.world()
        do {
            for step in 0..<1_000_000 {
                var width = 10
                if comm.rank == rank && step == at {
                    switch kind {
                    case .throw: throw CollectiveError.badArgument("selftest: rank \(rank) failed on purpose at step \(step)")
                    case .mismatch: width = 12  // a wrong logit width
                    case .stall: Thread.sleep(forTimeInterval: 3600)
                    }
                }
                let logits = Tensor(shape: [4, width], repeating: Float(comm.rank))
                _ = try withoutGradients { try allGather(logits, on: comm) }
                var x: [Double] = [1]
                try comm.allReduce(&x, op: .sum)
            }
        } catch {
            comm.abort("\(error)", code: 1)
        }
    }
}

struct SelfTestLoop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "loop",
        abstract: "Reports each rank's network namespace and host, then allreduces in a loop for --seconds.")

    @Option(help: "How long to loop.") var seconds = 2.0

    func run() throws {
        let comm = try MPICommunicator.world()
        let ns = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")) ?? "?"
        var check: [Double] = [Double(comm.rank + 1)]
        try comm.allReduce(&check, op: .sum)
        print("rank \(comm.rank) of \(comm.size): netns \(ns) allreduce \(Int(check[0]))")
        fflush(stdout)
        let start = Date()
        var n = 0
        while true {
            let t = Tensor(shape: [1000], repeating: 1)
            try comm.allReduce(t)
            n += 1
            // Every rank stops after the same number of calls: rank 0 decides.
            var more: [Int64] = [comm.rank == 0 && Date().timeIntervalSince(start) >= seconds ? 0 : 1]
            try comm.allReduce(&more, op: .min)
            if more[0] == 0 { break }
        }
        if comm.rank == 0 { print("loop done after \(n) allreduces") }
        MPICommunicator.finalize()
    }
}
