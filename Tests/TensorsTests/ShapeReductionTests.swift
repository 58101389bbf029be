import TestSupport
import Tensors
import XCTest

final class ShapeReductionTests: XCTestCase {
    func testSums() {
        let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(x.sum().item, 21)
        XCTAssertEqual(x.sum(axis: 0).array, [5, 7, 9])
        XCTAssertEqual(x.sum(axis: 1).array, [6, 15])
        XCTAssertEqual(x.sum(axis: 1, keepDims: true).shape, [2, 1])
        XCTAssertEqual(x.mean(axis: 0).array, [2.5, 3.5, 4.5])
        XCTAssertEqual(x.mean().item, 3.5)
        let y = randomTensor([2, 3, 4], seed: 11)
        gradCheck([y], "sum") { $0[0].sum() }
        gradCheck([y], "mean") { $0[0].mean() }
        gradCheck([y], "sum axis 1") { $0[0].sum(axis: 1) }
        gradCheck([y], "mean axes") { $0[0].mean(axes: [0, 2], keepDims: true) }
        gradCheck([y], "sum axes") { $0[0].sum(axes: [-1, 0]) }
        XCTAssertEqual(Tensor(shape: [2, 3], values: [0, 5, 1, 7, 2, 3]).argmaxLastAxis(), [1, 0])
    }

    func testReshapePermuteTranspose() {
        let x = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(x.transposed().array, [1, 4, 2, 5, 3, 6])
        XCTAssertEqual(x.reshaped([3, -1]).shape, [3, 2])
        let y = randomTensor([2, 3, 4, 5], seed: 12)
        let p = y.permuted([0, 3, 1, 2])
        XCTAssertEqual(p.shape, [2, 5, 3, 4])
        // element (n, c, h, w) of the permuted tensor is element (n, h, w, c) of the original
        XCTAssertEqual(p.data[((1 * 5 + 4) * 3 + 2) * 4 + 3], y.data[((1 * 3 + 2) * 4 + 3) * 5 + 4])
        gradCheck([y], "permute") { $0[0].permuted([2, 0, 3, 1]) }
        gradCheck([y], "reshape") { $0[0].reshaped([6, 20]) * 2 }
        gradCheck([y], "transpose") { $0[0].transposed(1, 3) }
    }

    /// Channel shuffle equals its definition, a reshape to [N, H, W, g, C/g], a swap of the last two axes and a
    /// reshape back; forward and backward.
    func testChannelShuffle() {
        let x = randomTensor([2, 3, 2, 12], seed: 13)
        for g in [1, 2, 3, 4] {
            let viaPermute = x.reshaped([2, 3, 2, g, 12 / g]).permuted([0, 1, 2, 4, 3]).reshaped([2, 3, 2, 12])
            XCTAssertEqual(x.channelShuffled(groups: g).array, viaPermute.array, "groups \(g)")
            gradCheck([x], "channel shuffle \(g)") { $0[0].channelShuffled(groups: g) * $0[0] }
        }
        XCTAssertEqual(Tensor(shape: [1, 1, 1, 6], values: [0, 1, 2, 3, 4, 5]).channelShuffled(groups: 2).array,
                       [0, 3, 1, 4, 2, 5])
    }

    /// interleaveChannels is channelShuffled(concat([a[…, range], b]), groups: 2) in one pass, forward and backward.
    func testInterleaveChannelsIsConcatThenShuffle() {
        let a = randomTensor([2, 3, 2, 10], seed: 14), b = randomTensor([2, 3, 2, 4], seed: 15)
        let w = randomTensor([2, 3, 2, 8], seed: 16)
        for range in [0..<4, 3..<7, 6..<10] {
            func grads(_ join: (Tensor, Tensor) -> Tensor) -> [[Float]] {
                a.requiresGrad = true; b.requiresGrad = true; a.zeroGrad(); b.zeroGrad()
                let y = join(a, b)
                (y * w).sum().backward()
                return [y.array, a.grad!.array, b.grad!.array]
            }
            let fused = grads { interleaveChannels($0, channels: range, $1) }
            let plain = grads { concat([$0.slice(axis: 3, range), $1], axis: 3).channelShuffled(groups: 2) }
            XCTAssertEqual(fused, plain, "channels \(range)")
            gradCheck([a, b], "interleave \(range)") { interleaveChannels($0[0], channels: range, $0[1]) * w }
        }
        let one = interleaveChannels(Tensor(shape: [1, 1, 1, 3], values: [9, 0, 1]), channels: 1..<3,
                                     Tensor(shape: [1, 1, 1, 2], values: [5, 6]))
        XCTAssertEqual(one.array, [0, 5, 1, 6])
    }

    func testConcatSplitSliceStack() {
        let a = Tensor(shape: [2, 2], values: [1, 2, 3, 4]), b = Tensor(shape: [2, 1], values: [9, 8])
        XCTAssertEqual(concat([a, b], axis: 1).array, [1, 2, 9, 3, 4, 8])
        XCTAssertEqual(concat([a, a], axis: 0).array, [1, 2, 3, 4, 1, 2, 3, 4])
        XCTAssertEqual(a.slice(axis: 1, 1..<2).array, [2, 4])
        XCTAssertEqual(stack([a, a]).shape, [2, 2, 2])
        let x = randomTensor([2, 3, 4], seed: 13), y = randomTensor([2, 2, 4], seed: 14)
        for axis in [0, 1, 2] {
            let other = axis == 1 ? y : x
            gradCheck([x, other], "concat axis \(axis)") { concat([$0[0], $0[1]], axis: axis) }
        }
        gradCheck([x], "split") { t in
            let parts = t[0].split(sizes: [1, 3], axis: 2)
            return parts[0] * 2 + parts[1].sum(axis: 2, keepDims: true)
        }
        gradCheck([x], "slice") { $0[0].slice(axis: 1, 1..<3) }
        gradCheck([x, x.copy()], "stack") { stack([$0[0], $0[1]]) }
    }
}
