// A run directory: the one owner of a run's paths and of the files that are not tensors.
//   config.yaml                                        the resolved config (written through Yams)
//   metrics.jsonl                                      one JSON object per epoch (Metrics.swift)
//   tensorboard/events.out.tfevents.*                  the same figures and per-step losses for TensorBoard (one
//                                                      file per start or resume of the run)
//   checkpoints/state.json                             {"epoch": E, "peers": P, "ranks": R, "threads": T}: the commit
//                                                      point, written last (R and T say what wrote it; any number
//                                                      of ranks and threads may resume it)
//   checkpoints/epoch-E/peerP.safetensors              weights and buffers of peer P (a complete model)
//   checkpoints/epoch-E/peerP.optimizer.safetensors    its optimisers' state, "<phase>/<parameter>/<state>"
//   checkpoints/epoch-E/peerP.module.safetensors       a method's trainable per-peer module (FFL's fusion slice)
//   checkpoints/epoch-E/peerP.extra.safetensors        a method's untrained per-peer state (PCL's mean teacher)
//   checkpoints/epoch-E/method.safetensors             the method's replicated modules (gate, projections, ...)
//   checkpoints/epoch-E/shared.optimizer.safetensors   optimiser state of replicated parameters ("stem.*", "method.*")
// The whole tree is on rank 0's node (Checkpoints.swift moves the other ranks' files there); nodes need share no disk.
// Every file is written to a temporary name, fsynced and renamed; the previous epoch's directory is removed only
// after state.json names the new one, so a run killed at any moment keeps a complete checkpoint.
import Foundation
import TensorFiles

/// The commit point of a run's checkpoints.
public struct CheckpointState: Codable, Equatable {
    public var epoch: Int, peers: Int, ranks: Int, threads: Int
}

public struct RunDirectory {
    public let path: String
    public init(_ path: String) { self.path = path }

    public var config: String { path + "/config.yaml" }
    public var metrics: String { path + "/metrics.jsonl" }
    public var tensorboard: String { path + "/tensorboard" }
    public var checkpoints: String { path + "/checkpoints" }
    public var state: String { checkpoints + "/state.json" }

    /// The files of one epoch's checkpoint.
    public struct Checkpoint {
        public let path: String
        public init(path: String) { self.path = path }
        public func peer(_ p: Int) -> String { path + "/peer\(p).safetensors" }
        public func peerOptimizer(_ p: Int) -> String { path + "/peer\(p).optimizer.safetensors" }
        public func peerModule(_ p: Int) -> String { path + "/peer\(p).module.safetensors" }
        public func peerExtra(_ p: Int) -> String { path + "/peer\(p).extra.safetensors" }
        public var method: String { path + "/method.safetensors" }
        public var sharedOptimizer: String { path + "/shared.optimizer.safetensors" }
    }

    public func checkpoint(epoch: Int) -> Checkpoint { Checkpoint(path: checkpoints + "/epoch-\(epoch)") }

    /// A checkpoint to read from a path the user gave: a run directory (its last complete checkpoint) or one of
    /// its `checkpoints/epoch-E` directories.
    public static func checkpoint(at path: String) throws -> Checkpoint {
        let run = RunDirectory(path)
        if FileManager.default.fileExists(atPath: run.state) { return run.checkpoint(epoch: try run.readState().epoch) }
        let c = Checkpoint(path: path)
        guard FileManager.default.fileExists(atPath: c.peer(0)) else {
            throw ConfigError("\(path): neither a run directory with checkpoints/state.json nor a checkpoint directory with peer0.safetensors")
        }
        return c
    }

    /// Starts a fresh run: the directories, config.yaml and an empty metrics.jsonl.
    public func create(config: TrainConfig) throws {
        try FileManager.default.createDirectory(atPath: checkpoints, withIntermediateDirectories: true)
        try writeAtomically(Data(config.yaml.utf8), to: self.config)
        try writeAtomically(Data(), to: metrics)
    }

    /// The config the run was started with.
    public func savedConfig() throws -> TrainConfig {
        guard FileManager.default.fileExists(atPath: config) else {
            throw ConfigError("cannot resume: \(config) is missing (\(path) is not a run directory)")
        }
        return try TrainConfig.load(config)
    }

    public func readState() throws -> CheckpointState {
        if let size = (try? FileManager.default.attributesOfItem(atPath: state))?[.size] as? Int, size > 4096 {
            throw ConfigError("cannot resume: \(state) has \(size) bytes; a checkpoint's state.json is one short line")
        }
        guard let data = FileManager.default.contents(atPath: state), let s = try? JSONDecoder().decode(CheckpointState.self, from: data) else {
            throw ConfigError("cannot resume: \(state) is missing or unreadable (no complete checkpoint in \(path))")
        }
        return s
    }

    /// Commits a checkpoint: state.json names it, then the previous epoch's directory goes.
    public func commit(_ s: CheckpointState) throws {
        let previous = try? readState()
        try writeAtomically(try JSONEncoder().encode(s) + Data("\n".utf8), to: state)
        if let old = previous, old.epoch != s.epoch { try? FileManager.default.removeItem(atPath: checkpoint(epoch: old.epoch).path) }
    }

    /// Appends one line to metrics.jsonl and flushes it to disk.
    public func appendMetrics(_ line: Data) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: metrics))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line + Data("\n".utf8))
        try handle.synchronize()
    }

    /// Keeps the first `epochs` lines of metrics.jsonl (a resumed run drops those written after its checkpoint).
    public func truncateMetrics(toEpochs epochs: Int) throws {
        let lines = ((try? String(contentsOfFile: metrics, encoding: .utf8)) ?? "").split(separator: "\n")
        try writeAtomically(Data(lines.prefix(epochs).map { $0 + "\n" }.joined().utf8), to: metrics)
    }
}
