// Named datasets: where their files live, how they are split, and their normalisation statistics.
import Foundation

public enum Split: String, Codable, CaseIterable { case train, test }

public enum DatasetCatalog {
    /// The dataset names `load` knows.
    public static let names = ["cifar10", "cifar100", "fashion-mnist", "mnist"]

    /// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
    public static let fashionMNISTDefaultPath = "/usr/share/datasets/fashion-mnist"

    /// Loads `name` (cifar10, cifar100, fashion-mnist, mnist) from `path`, or from its default location.
    /// `coarseLabels` selects CIFAR-100's 20 superclasses instead of its 100 classes.
    public static func load(_ name: String, path: String? = nil, split: Split, coarseLabels: Bool = false) throws -> Dataset {
        switch name.lowercased() {
        case "cifar10", "cifar-10":
            guard let dir = path else { throw DatasetError.missingDirectory(path: "(dataset.path not set)", expected: cifar10Files(.train) + cifar10Files(.test)) }
            try checkDirectory(dir, expected: cifar10Files(.train) + cifar10Files(.test))
            let store = try loadCIFAR(files: cifar10Files(split).map { dir + "/" + $0 }, labelBytes: 1, labelOffset: 0, classes: 10)
            return Dataset(name: "cifar10/\(split.rawValue)", store: store, classes: 10,
                           mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])
        case "cifar100", "cifar-100":
            let files = ["train.bin", "test.bin"]
            guard let dir = path else { throw DatasetError.missingDirectory(path: "(dataset.path not set)", expected: files) }
            try checkDirectory(dir, expected: files)
            let classes = coarseLabels ? 20 : 100
            let store = try loadCIFAR(files: [dir + "/" + (split == .train ? "train.bin" : "test.bin")], labelBytes: 2,
                                      labelOffset: coarseLabels ? 0 : 1, classes: classes)
            return Dataset(name: "cifar100/\(split.rawValue)", store: store, classes: classes,
                           mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762])
        case "fashion-mnist", "fashion_mnist", "fmnist", "mnist":
            let fashion = name.lowercased() != "mnist"
            guard let dir = path ?? (fashion ? fashionMNISTDefaultPath : nil) else {
                throw DatasetError.missingDirectory(path: "(dataset.path not set)", expected: idxFiles(.train) + idxFiles(.test))
            }
            try checkDirectory(dir, expected: idxFiles(.train) + idxFiles(.test),
                               hint: fashion && path == nil ? " (install Debian's dataset-fashion-mnist package)" : "")
            let files = idxFiles(split).map { resolveIDX(dir + "/" + $0) }
            let store = try loadIDX(images: files[0], labels: files[1], classes: 10)
            return Dataset(name: "\(fashion ? "fashion-mnist" : "mnist")/\(split.rawValue)", store: store, classes: 10,
                           mean: [fashion ? 0.2860 : 0.1307], std: [fashion ? 0.3530 : 0.3081])
        default:
            throw DatasetError.unknownDataset(name)
        }
    }

    static func cifar10Files(_ split: Split) -> [String] {
        split == .train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
    }

    static func idxFiles(_ split: Split) -> [String] {
        let prefix = split == .train ? "train" : "t10k"
        return ["\(prefix)-images-idx3-ubyte.gz", "\(prefix)-labels-idx1-ubyte.gz"]
    }

    /// Accepts an uncompressed copy when the .gz name is absent.
    static func resolveIDX(_ gz: String) -> String {
        if !FileManager.default.fileExists(atPath: gz), FileManager.default.fileExists(atPath: String(gz.dropLast(3))) {
            return String(gz.dropLast(3))
        }
        return gz
    }

    static func checkDirectory(_ dir: String, expected: [String], hint: String = "") throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw DatasetError.missingDirectory(path: dir + hint, expected: expected)
        }
    }
}
