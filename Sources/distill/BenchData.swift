// `distill bench data`: loader throughput with augmentation and one background thread.
import ArgumentParser
import Datasets
import Foundation
import Training
import Tensors

struct BenchData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Measures batch loading throughput (images/s) for CIFAR-shaped and Fashion-MNIST batches.",
        discussion: """
        Iterates the loader over batches of --batch with training augmentation (random crop, flip, normalisation);
        the next batch is prepared on one background thread while the current one is handed out. CIFAR-shaped data
        is 50,000 synthetic 32×32×3 images in memory (CIFAR files are not shipped); Fashion-MNIST is read from
        Debian's dataset-fashion-mnist when installed, otherwise synthetic 28×28×1 images are used.
        """)

    @Option(help: "Batch size.")
    var batch = 128

    @Option(help: "Batches timed per dataset.")
    var steps = 100

    @OptionGroup var format: OutputFormat

    func run() throws {
        var g = Generator(seed: 1)
        let cifarStore = ImageStore(pixels: (0..<(50_000 * 3072)).map { _ in UInt8(truncatingIfNeeded: g.next()) },
                                    labels: (0..<50_000).map { Int32($0 % 100) }, height: 32, width: 32, channels: 3)
        let cifar = Dataset(name: "cifar-shaped", store: cifarStore, classes: 100,
                            mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762])
        let fmnist: Dataset
        var fmnistSource = "Debian dataset-fashion-mnist"
        if let real = try? DatasetCatalog.load("fashion-mnist", split: .train) {
            fmnist = real
        } else {
            fmnistSource = "synthetic"
            let store = ImageStore(pixels: (0..<(60_000 * 784)).map { _ in UInt8(truncatingIfNeeded: g.next()) },
                                   labels: (0..<60_000).map { Int32($0 % 10) }, height: 28, width: 28, channels: 1)
            fmnist = Dataset(name: "fashion-mnist-shaped", store: store, classes: 10, mean: [0.286], std: [0.353])
        }
        let c = measure(cifar, .cifar), f = measure(fmnist, .fashionMNIST)
        if format.json {
            try printJSON(["cifar_loader_ips": c.rounded(), "fmnist_loader_ips": f.rounded()])
        } else {
            print(String(format: "CIFAR-shaped loader, batch %d, crop+flip:        %10.0f images/s", batch, c))
            print(String(format: "Fashion-MNIST loader (%@), batch %d:  %10.0f images/s", fmnistSource, batch, f))
        }
    }

    func measure(_ data: Dataset, _ aug: Augmentation) -> Double {
        let sampler = EpochSampler(count: data.count, batchSize: batch, seed: 0)
        var done = 0, epoch = 0
        var first = true
        var t0 = 0.0
        while done < steps {
            for b in BatchLoader(data: data, sampler: sampler, epoch: epoch, augmentation: aug) {
                if first { first = false; t0 = Profiler.now(); continue }  // the first batch is not prefetched
                _ = b.images[0].count
                done += 1
                if done == steps { break }
            }
            epoch += 1
        }
        return Double(steps * batch) / (Profiler.now() - t0)
    }
}
