// Saving and restoring an experiment's state in a run directory's checkpoints (the layout is RunDirectory's):
// each rank writes its peers' files, rank 0 the replicated ones, and state.json is written last as the commit
// point. Restoring loads weights, buffers, per-peer modules and state, and every optimiser's state (momentum; Adam
// moments and steps; one set per phase), so a resumed run ends with the same weights, bit for bit, as an
// uninterrupted one on the same ranks and threads.
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

    /// Writes epoch `epoch`'s checkpoint and commits it. Every rank calls it.
    func save(epoch: Int, to run: RunDirectory) throws {
        let dir = run.checkpoint(epoch: epoch)
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
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
        if writesPeers {
            for (k, p) in placement.localPeers.enumerated() {
                try models[k].saveSafeTensors(to: dir.peer(p), metadata: meta.merging(["model": peerModels[p], "peer": "\(p)"]) { $1 })
                try SafeTensors.write(named: optimizerState(prefix: "peer\(p).", strip: true), metadata: meta, to: dir.peerOptimizer(p))
                if let module = method.peerModule(k) { try module.saveSafeTensors(to: dir.peerModule(p), metadata: meta) }
                if let extra = method.peerExtraState(k) { try extra.saveSafeTensors(to: dir.peerExtra(p), metadata: meta) }
            }
        }
        if isLeader {
            if !method.modules.isEmpty { try methodState.saveSafeTensors(to: dir.method, metadata: meta) }
            if !replicated.isEmpty {
                try SafeTensors.write(named: optimizerState(prefix: "stem.", strip: false) + optimizerState(prefix: "method.", strip: false),
                                      metadata: meta, to: dir.sharedOptimizer)
            }
        }
        try world.barrier()  // every rank's files are in place before the state names them
        if isLeader { try run.commit(CheckpointState(epoch: epoch, peers: placement.peers, ranks: world.size, threads: Threads.count)) }
        try world.barrier()
    }

    /// Loads the weights of a checkpoint into the local peers and the method's modules.
    public func loadWeights(from dir: RunDirectory.Checkpoint) throws {
        for (k, p) in placement.localPeers.enumerated() {
            try models[k].loadSafeTensors(from: dir.peer(p))
            if let module = method.peerModule(k) { try module.loadSafeTensors(from: dir.peerModule(p)) }
            if let extra = method.peerExtraState(k) { try extra.loadSafeTensors(from: dir.peerExtra(p)) }
        }
        if !method.modules.isEmpty { try methodState.loadSafeTensors(from: dir.method) }
    }

    /// Loads optimiser state ("<phase>/<name>/<state>") from a file into the optimisers, the names under `prefix`,
    /// checking that every phase, parameter and shape exists.
    func loadOptimizerState(from path: String, prefix: String) throws {
        let (tensors, _) = try SafeTensors.read(path)
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

    /// Loads the last checkpoint of `run` into the local peers and optimisers; returns the epoch to continue from.
    func restore(from run: RunDirectory) throws -> Int {
        var saved = try run.savedConfig()
        saved.epochs = config.epochs
        guard saved == config else {
            throw ConfigError("cannot resume: the config differs from the run's \(run.config) (only epochs may change)")
        }
        let state = try run.readState()
        guard state.peers == placement.peers else {
            throw ConfigError("cannot resume: the checkpoint has \(state.peers) peers, the config \(placement.peers)")
        }
        let dir = run.checkpoint(epoch: state.epoch)
        try loadWeights(from: dir)
        for o in optimizers.map(\.optimizer) { for (name, _) in o.parameters { try o.setState(of: name, []) } }
        for p in placement.localPeers { try loadOptimizerState(from: dir.peerOptimizer(p), prefix: "peer\(p).") }
        if !replicated.isEmpty { try loadOptimizerState(from: dir.sharedOptimizer, prefix: "") }
        return state.epoch
    }
}
