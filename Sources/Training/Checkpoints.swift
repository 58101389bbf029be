// Saving and restoring an experiment's state in a run directory's checkpoints (the layout is RunDirectory's).
// A checkpoint is whole on rank 0's node, whatever the file systems: each rank sends its peers' files to rank 0,
// which writes them and the replicated ones, state.json last as the commit point; on resume rank 0 reads them and
// sends each rank the files of the peers it hosts. Nothing in it depends on the placement, so a checkpoint
// written by R ranks resumes on any R'. Restoring loads weights, buffers, per-peer modules and state, and every
// optimiser's state (momentum; Adam moments and steps; one set per phase), so a resumed run ends with the same
// weights, bit for bit, as an uninterrupted one on the same ranks and threads, and within float summation order
// of it on other ranks.
import Collectives
import Distillation
import Foundation
import Layers
import TensorFiles
import Tensors

extension Experiment {
    /// Every optimiser's state of the parameters whose names start with `prefix`, as "<phase>/<name>/<state>"
    /// (the prefix removed from the name when `strip`).
    func optimizerState(prefix: String, strip: Bool) -> [(String, Tensor)] {
        optimizers.flatMap { phase in
            phase.optimizer.parameters.filter { $0.0.hasPrefix(prefix) }.flatMap { name, _ in
                let shown = strip ? String(name.dropFirst(prefix.count)) : name
                return phase.optimizer.state(of: name).map { ("\(phase.phase)/\(shown)/\($0.0)", $0.1) }
            }
        }
    }

    /// Writes epoch `epoch`'s checkpoint on rank 0's node and commits it. Every rank calls it.
    func save(epoch: Int, to run: RunDirectory) throws {
        let dir = run.checkpoint(epoch: epoch)
        if peerComm.size > 1 && !replicated.isEmpty {
            // A periodic check that the replicated stem and modules have not drifted apart.
            let others = methodState.namedState().map { ("method." + $0.0, $0.1) }
            let drifted = try cohort.stem.map { try $0.driftedReplicas(others) }
                ?? checkReplicasAgree(others.map { ($0.0, $0.1.value) }, on: peerComm)
            guard drifted.isEmpty else {
                throw MethodError("replicated parameters differ across ranks at epoch \(epoch): \(drifted.prefix(5).joined(separator: ", "))")
            }
        }
        cohort.stem?.copyIntoPeers()
        let meta = ["epoch": "\(epoch)", "method": method.name]
        var files: [(String, Data)] = []
        if writesPeers {
            for (k, p) in placement.localPeers.enumerated() {
                files.append((dir.peer(p), models[k].safeTensorsData(metadata: meta.merging(["model": peerModels[p], "peer": "\(p)"]) { $1 })))
                files.append((dir.peerOptimizer(p), SafeTensors.encode(named: optimizerState(prefix: "peer\(p).", strip: true), metadata: meta)))
                if let module = method.peerModule(k) { files.append((dir.peerModule(p), module.safeTensorsData(metadata: meta))) }
                if let extra = method.peerExtraState(k) { files.append((dir.peerExtra(p), extra.safeTensorsData(metadata: meta))) }
            }
        }
        if isLeader {
            if !method.modules.isEmpty { files.append((dir.method, methodState.safeTensorsData(metadata: meta))) }
            if !replicated.isEmpty {
                files.append((dir.sharedOptimizer, SafeTensors.encode(named: optimizerState(prefix: "stem.", strip: false)
                    + optimizerState(prefix: "method.", strip: false), metadata: meta)))
            }
        }
        // Every rank's files reach rank 0, which writes them all before state.json names them.
        let written = try writeOnLeader(files, in: dir.path)
        if isLeader {
            try written.get()
            try run.commit(CheckpointState(epoch: epoch, peers: placement.peers, ranks: world.size, threads: Threads.count))
        }
        try world.barrier()
    }

    /// Sends every rank's files to rank 0, which creates `directory` and writes them; rank 0 gets the outcome.
    private func writeOnLeader(_ files: [(String, Data)], in directory: String) throws -> Result<Void, Error> {
        let sets = try world.gather(bytes: try FileSet(files).encoded())
        guard isLeader else { return .success(()) }
        return Result {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for set in sets { for (path, data) in try FileSet.decode(set).files { try writeAtomically(data, to: path) } }
        }
    }

    /// The files each rank names, read on rank 0's node and sent to the rank that asked (a checkpoint lives
    /// there). A file rank 0 cannot read is an error on every rank.
    func readFromLeader(_ paths: [String]) throws -> [String: Data] {
        let requests = try world.gather(bytes: try FileSet(paths.map { ($0, Data()) }).encoded())
        var replies: [Data] = []
        if isLeader {
            do {
                var cache: [String: Data] = [:]
                func read(_ path: String) throws -> Data {
                    if let d = cache[path] { return d }
                    let d = try SafeTensors.contents(of: path)
                    cache[path] = d
                    return d
                }
                replies = try requests.map { r in try FileSet(try FileSet.decode(r).files.map { ($0.0, try read($0.0)) }).encoded() }
            } catch {
                let failed = try FileSet([], error: "\(error)").encoded()
                replies = Array(repeating: failed, count: world.size)
            }
        }
        let reply = try FileSet.decode(try world.scatter(replies))
        if let e = reply.error { throw ConfigError("cannot read the checkpoint on rank 0's node: \(e)") }
        return Dictionary(reply.files, uniquingKeysWith: { a, _ in a })
    }

    /// Loads the weights of a checkpoint (on rank 0's node) into the local peers and the method's modules.
    public func loadWeights(from dir: RunDirectory.Checkpoint) throws {
        try loadWeights(from: dir, files: try readFromLeader(weightFiles(dir)))
    }

    /// The files of `dir` that loadWeights reads on this rank: its peers' weights, modules and extra state, and
    /// the method's replicated modules.
    private func weightFiles(_ dir: RunDirectory.Checkpoint) -> [String] {
        var paths: [String] = []
        for (k, p) in placement.localPeers.enumerated() {
            paths.append(dir.peer(p))
            if method.peerModule(k) != nil { paths.append(dir.peerModule(p)) }
            if method.peerExtraState(k) != nil { paths.append(dir.peerExtra(p)) }
        }
        if !method.modules.isEmpty { paths.append(dir.method) }
        return paths
    }

    private func loadWeights(from dir: RunDirectory.Checkpoint, files: [String: Data]) throws {
        for (k, p) in placement.localPeers.enumerated() {
            try models[k].loadSafeTensors(data: files[dir.peer(p)]!, path: dir.peer(p))
            if let module = method.peerModule(k) { try module.loadSafeTensors(data: files[dir.peerModule(p)]!, path: dir.peerModule(p)) }
            if let extra = method.peerExtraState(k) { try extra.loadSafeTensors(data: files[dir.peerExtra(p)]!, path: dir.peerExtra(p)) }
        }
        if !method.modules.isEmpty { try methodState.loadSafeTensors(data: files[dir.method]!, path: dir.method) }
    }

    /// Loads optimiser state ("<phase>/<name>/<state>") from a file into the optimisers, the names under `prefix`,
    /// checking that every phase, parameter and shape exists.
    func loadOptimizerState(from path: String, data: Data, prefix: String) throws {
        let (tensors, _) = try SafeTensors.read(data: data, path: path)
        // Each (phase, parameter)'s state tensors, in file order.
        var byParameter: [[String]: [(String, Tensor)]] = [:], order: [[String]] = []
        for (key, t) in tensors {
            let parts = key.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, optimizers.contains(where: { $0.phase == parts[0] }) else {
                throw ConfigError("cannot resume: \(path) has '\(key)', not <phase>/<parameter>/<state> of a phase of \(optimizers.map(\.phase).joined(separator: ", "))")
            }
            let id = [parts[0], prefix + parts[1]]
            if byParameter[id] == nil { order.append(id) }
            byParameter[id, default: []].append((parts[2], Tensor(shape: t.shape, values: t.values)))
        }
        for id in order {
            let (phase, name) = (id[0], id[1])
            let o = optimizers.first { $0.phase == phase }!.optimizer
            guard o.parameters.contains(where: { $0.0 == name }) else {
                throw ConfigError("cannot resume: \(path) has \(phase) optimiser state for '\(name)', which that optimiser does not update")
            }
            do { try o.setState(of: name, byParameter[id]!) } catch { throw ConfigError("cannot resume: \(path): \(error)") }
        }
    }

    /// Loads the last checkpoint of `run` (on rank 0's node) into the local peers and optimisers; returns the epoch
    /// to continue from. The checkpoint is placement-free: any number of ranks may resume it.
    func restore(from run: RunDirectory) throws -> Int {
        let state = try decidedOnLeader(world) { () throws -> CheckpointState in
            var saved = try run.savedConfig()
            saved.epochs = config.epochs
            guard saved == config else {
                throw ConfigError("cannot resume: the config differs from the run's \(run.config) (only epochs may change)")
            }
            return try run.readState()
        }
        guard state.peers == placement.peers else {
            throw ConfigError("cannot resume: the checkpoint has \(state.peers) peers, the config \(placement.peers)")
        }
        let dir = run.checkpoint(epoch: state.epoch)
        let optimizerFiles = placement.localPeers.map(dir.peerOptimizer) + (replicated.isEmpty ? [] : [dir.sharedOptimizer])
        let files = try readFromLeader(weightFiles(dir) + optimizerFiles)
        try loadWeights(from: dir, files: files)
        for o in optimizers.map(\.optimizer) { for (name, _) in o.parameters { try o.setState(of: name, []) } }
        for p in placement.localPeers {
            try loadOptimizerState(from: dir.peerOptimizer(p), data: files[dir.peerOptimizer(p)]!, prefix: "peer\(p).")
        }
        if !replicated.isEmpty { try loadOptimizerState(from: dir.sharedOptimizer, data: files[dir.sharedOptimizer]!, prefix: "") }
        return state.epoch
    }
}

/// Files by path, with an error in place of them when they could not be had: what ranks send each other when
/// only rank 0's disk holds a checkpoint (a binary property list: Foundation's encoder, paths and bytes as they are).
struct FileSet: Codable {
    var paths: [String], contents: [Data], error: String?
    init(_ files: [(String, Data)], error: String? = nil) {
        paths = files.map(\.0); contents = files.map(\.1); self.error = error
    }
    var files: [(String, Data)] { Array(zip(paths, contents)) }
    func encoded() throws -> Data {
        let e = PropertyListEncoder()
        e.outputFormat = .binary
        return try e.encode(self)
    }
    static func decode(_ data: Data) throws -> FileSet { try PropertyListDecoder().decode(FileSet.self, from: data) }
}

/// A value decided on rank 0, or the error that prevented it, as rank 0 sends it to every rank.
private struct LeaderOutcome<T: Codable>: Codable { var value: T?, error: String? }

/// Runs `body` on rank 0 of `comm` and gives its value, or its error as a ConfigError, to every rank: one
/// decision from the files on rank 0's node.
public func decidedOnLeader<T: Codable>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
    var data = Data()
    if comm.rank == 0 {
        var outcome = LeaderOutcome<T>(value: nil, error: nil)
        do { outcome.value = try body() } catch let e as ConfigError { outcome.error = e.message } catch { outcome.error = "\(error)" }
        data = try JSONEncoder().encode(outcome)
    }
    let outcome = try JSONDecoder().decode(LeaderOutcome<T>.self, from: try comm.broadcast(data: data))
    if let e = outcome.error { throw ConfigError(e) }
    guard let value = outcome.value else { throw ConfigError("rank 0 sent no decision") }
    return value
}
