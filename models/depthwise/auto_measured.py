"""The measured tables behind models/depthwise/auto.py's rules (pasted from the committed
benchmarks by `python benchmarks/ops.py --auto-table ...`; tests/test_auto.py checks them against
those files and the rules against them). Rows: (shape name, op, x, weight, stride, channels_last,
{impl: median_us}), comment: the winner (smallest median)."""

# ---------------------------------------------------------------- measured CPU numbers
# Copied from benchmarks/results/ops-cpu.json by `python benchmarks/ops.py --auto-table`
# (AMD EPYC, 2 cores, quiet, torch's default 2 threads, wall clock, glibc keeping freed
# memory (models/allocator.py); torch 2.13, float32): median us per call through the public op.
# fmt: off
CPU_MEASURED: tuple = (
    ('seed-c2048', 'conv1d', (1, 2048, 21), (2048, 1, 3), 1, False, dict(per_group=25552.4, slice_sum=53.7, compiled=90.3, native=131.3)),  # -> slice_sum
    ('sweep-c64', 'conv1d', (1, 64, 21), (64, 1, 3), 1, False, dict(per_group=797.3, slice_sum=26.6, compiled=72.1, native=102.3)),  # -> slice_sum
    ('sweep-c128', 'conv1d', (1, 128, 21), (128, 1, 3), 1, False, dict(per_group=1571.8, slice_sum=27.6, compiled=70.9, native=102.9)),  # -> slice_sum
    ('sweep-c256', 'conv1d', (1, 256, 21), (256, 1, 3), 1, False, dict(per_group=3127.2, slice_sum=30.1, compiled=74.1, native=104.9)),  # -> slice_sum
    ('sweep-c512', 'conv1d', (1, 512, 21), (512, 1, 3), 1, False, dict(per_group=6250.8, slice_sum=36.0, compiled=76.8, native=108.1)),  # -> slice_sum
    ('sweep-c1024', 'conv1d', (1, 1024, 21), (1024, 1, 3), 1, False, dict(per_group=12709.4, slice_sum=46.8, compiled=82.8, native=115.9)),  # -> slice_sum
    ('sweep-c4096', 'conv1d', (1, 4096, 21), (4096, 1, 3), 1, False, dict(per_group=50730.1, slice_sum=72.5, compiled=99.1, native=150.0)),  # -> slice_sum
    ('lfm2-350m-prefill-1x128', 'conv1d', (1, 1024, 128), (1024, 1, 3), 1, False, dict(per_group=12941.6, slice_sum=113.5, compiled=203.8, native=199.5)),  # -> slice_sum
    ('lfm2-350m-prefill-8x512', 'conv1d', (8, 1024, 512), (1024, 1, 3), 1, False, dict(per_group=99232.8, slice_sum=3255.5, compiled=4098.3, native=4045.7)),  # -> slice_sum
    ('lfm2-2.6b-short-1x19', 'conv1d', (1, 2048, 19), (2048, 1, 3), 1, False, dict(per_group=25184.3, slice_sum=73.8, compiled=120.6, native=154.7)),  # -> slice_sum
    ('decode-16x2048', 'decode', (16, 2048), (2048, 1, 3), 1, False, dict(per_group=171702.7, slice_sum=263.1, compiled=284.0, native=337.3)),  # -> slice_sum
    ('shortconv-long-1x4096x4096', 'conv1d', (1, 4096, 4096), (4096, 1, 4), 1, False, dict(per_group=142046.8, slice_sum=61765.9, compiled=39924.7, native=101237.5)),  # -> compiled
    ('conformer-k31-8x256x512', 'conv1d', (8, 256, 512), (256, 1, 31), 1, False, dict(per_group=32439.3, slice_sum=2328.4, compiled=9617.1, native=12092.1)),  # -> slice_sum
    ('mbv2-b1-c32@112', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, False, dict(per_group=1250.2, slice_sum=449.2, compiled=719.7, native=294.5)),  # -> native
    ('mbv2-b1-c96@112-s2', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, False, dict(per_group=4646.3, slice_sum=1385.4, compiled=1901.9, native=328.4)),  # -> native
    ('mbv2-b1-c144@56', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, False, dict(per_group=2736.4, slice_sum=552.7, compiled=768.0, native=266.4)),  # -> native
    ('mbv2-b1-c144@56-s2', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, False, dict(per_group=2992.5, slice_sum=626.0, compiled=851.5, native=209.2)),  # -> native
    ('mbv2-b1-c192@28', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, False, dict(per_group=2661.7, slice_sum=343.9, compiled=345.2, native=182.1)),  # -> native
    ('mbv2-b1-c384@14', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, False, dict(per_group=4733.9, slice_sum=337.1, compiled=194.9, native=149.9)),  # -> native
    ('mbv2-b1-c576@14', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, False, dict(per_group=7097.7, slice_sum=427.2, compiled=232.5, native=169.6)),  # -> native
    ('mbv2-b1-c576@14-s2', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, False, dict(per_group=6813.1, slice_sum=491.6, compiled=288.7, native=145.2)),  # -> native
    ('mbv2-b1-c960@7', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, False, dict(per_group=11300.8, slice_sum=434.3, compiled=164.1, native=146.2)),  # -> native
    ('mbv2-b32-c32@112', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, False, dict(per_group=69388.2, slice_sum=58951.9, compiled=38599.0, native=63983.1)),  # -> compiled
    ('mbv2-b32-c96@112-s2', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, False, dict(per_group=39834.4, slice_sum=174056.3, compiled=70876.6, native=93485.3)),  # -> per_group
    ('mbv2-b32-c144@56', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 1, False, dict(per_group=75421.1, slice_sum=70797.5, compiled=43115.8, native=71730.5)),  # -> compiled
    ('mbv2-b32-c144@56-s2', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 2, False, dict(per_group=28092.6, slice_sum=47799.0, compiled=23598.0, native=25630.0)),  # -> compiled
    ('mbv2-b32-c192@28', 'conv2d', (32, 192, 28, 28), (192, 1, 3, 3), 1, False, dict(per_group=33917.7, slice_sum=11141.0, compiled=8039.4, native=3198.1)),  # -> native
    ('mbv2-b32-c384@14', 'conv2d', (32, 384, 14, 14), (384, 1, 3, 3), 1, False, dict(per_group=45374.6, slice_sum=7502.1, compiled=3367.4, native=1663.6)),  # -> native
    ('mbv2-b32-c576@14', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 1, False, dict(per_group=65785.2, slice_sum=11859.5, compiled=4872.8, native=2886.6)),  # -> native
    ('mbv2-b32-c576@14-s2', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 2, False, dict(per_group=55810.0, slice_sum=9369.2, compiled=6023.1, native=1434.7)),  # -> native
    ('mbv2-b32-c960@7', 'conv2d', (32, 960, 7, 7), (960, 1, 3, 3), 1, False, dict(per_group=90356.7, slice_sum=10247.6, compiled=1684.0, native=1069.9)),  # -> native
    ('mbv2-b1-c32@112-cl', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=11379.7, slice_sum=1631.2, compiled=548.6, native=190.1)),  # -> native
    ('mbv2-b1-c96@112-s2-cl', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=10812.6, slice_sum=1316.7, compiled=488.9, native=191.1)),  # -> native
    ('mbv2-b1-c144@56-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=14032.5, slice_sum=1726.0, compiled=578.8, native=216.1)),  # -> native
    ('mbv2-b1-c144@56-s2-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=7661.2, slice_sum=611.1, compiled=259.2, native=134.6)),  # -> native
    ('mbv2-b1-c192@28-cl', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=8922.2, slice_sum=690.1, compiled=276.1, native=144.4)),  # -> native
    ('mbv2-b1-c384@14-cl', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=9248.7, slice_sum=392.7, compiled=175.5, native=113.9)),  # -> native
    ('mbv2-b1-c576@14-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=13999.2, slice_sum=518.8, compiled=229.4, native=139.8)),  # -> native
    ('mbv2-b1-c576@14-s2-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=10766.5, slice_sum=356.9, compiled=136.4, native=110.1)),  # -> native
    ('mbv2-b1-c960@7-cl', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=17218.3, slice_sum=314.4, compiled=152.6, native=108.7)),  # -> native
    ('mbv2-b8-c32@112-cl', 'conv2d', (8, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=24062.4, slice_sum=12541.5, compiled=3551.9, native=858.9)),  # -> native
    ('mbv2-b8-c96@112-s2-cl', 'conv2d', (8, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=40420.5, slice_sum=26833.2, compiled=4409.8, native=1360.2)),  # -> native
    ('mbv2-b8-c144@56-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=41879.9, slice_sum=13257.8, compiled=3924.6, native=1257.0)),  # -> native
    ('mbv2-b8-c144@56-s2-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=25429.2, slice_sum=4747.1, compiled=1444.5, native=469.5)),  # -> native
    ('mbv2-b8-c192@28-cl', 'conv2d', (8, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=26137.6, slice_sum=4359.8, compiled=1311.0, native=411.1)),  # -> native
    ('mbv2-b8-c384@14-cl', 'conv2d', (8, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=34483.3, slice_sum=2198.8, compiled=706.8, native=252.9)),  # -> native
    ('mbv2-b8-c576@14-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=52774.0, slice_sum=3202.1, compiled=1038.8, native=367.7)),  # -> native
    ('mbv2-b8-c576@14-s2-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=45791.1, slice_sum=1025.4, compiled=350.2, native=179.5)),  # -> native
    ('mbv2-b8-c960@7-cl', 'conv2d', (8, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=71577.4, slice_sum=1426.5, compiled=499.7, native=204.6)),  # -> native
    ('mbv2-b32-c32@112-cl', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=140734.2, slice_sum=86048.5, compiled=31817.7, native=21408.0)),  # -> native
    ('mbv2-b32-c96@112-s2-cl', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=188113.1, slice_sum=122308.4, compiled=23077.7, native=6577.1)),  # -> native
    ('mbv2-b32-c144@56-cl', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=128273.2, slice_sum=96107.5, compiled=37025.0, native=26820.2)),  # -> native
    ('mbv2-b32-c144@56-s2-cl', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=57749.3, slice_sum=49534.1, compiled=16452.8, native=3725.2)),  # -> native
    ('mbv2-b32-c192@28-cl', 'conv2d', (32, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=69745.5, slice_sum=20382.5, compiled=5719.1, native=2352.2)),  # -> native
    ('mbv2-b32-c384@14-cl', 'conv2d', (32, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=68538.5, slice_sum=9843.8, compiled=2917.9, native=1186.6)),  # -> native
    ('mbv2-b32-c576@14-cl', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=96735.5, slice_sum=14279.4, compiled=4310.5, native=1737.3)),  # -> native
    ('mbv2-b32-c576@14-s2-cl', 'conv2d', (32, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=79862.7, slice_sum=5198.3, compiled=1380.2, native=652.3)),  # -> native
    ('mbv2-b32-c960@7-cl', 'conv2d', (32, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=103050.8, slice_sum=5639.0, compiled=1752.4, native=627.2)),  # -> native
    ('convnext-7x7-1x96@56', 'conv2d', (1, 96, 56, 56), (96, 1, 7, 7), 1, False, dict(per_group=10467.5, slice_sum=1764.7, compiled=3378.7, native=366.6)),  # -> native
)
# fmt: on


# ---------------------------------------------------------------- measured CUDA numbers
# Copied from benchmarks/results/h200-2026-12-04/ops-h200.json by `python benchmarks/ops.py
# --auto-table benchmarks/results/h200-2026-12-04/ops-h200.json` (NVIDIA H200, driver 580.159,
# torch 2.11, Triton 3.6, float32, wall clock of eager calls, device-synchronised): median us per
# call through the public op; `compiled` timed on the big shapes only. Fused calls went through
# Triton's own launch (JITFunction.run): the direct launch was off; auto's rule with it off. The bf16 run beside it
# (ops-h200-bfloat16.json, 16 shapes) has the same winner on every row (tests/test_auto.py).
# On that machine every eager call costs the host 20-120 us, so these rows rank host paths on the
# small shapes and kernels only on the big ones (the folder's NOTES.md).
# fmt: off
CUDA_MEASURED: tuple = (
    ('seed-c2048', 'conv1d', (1, 2048, 21), (2048, 1, 3), 1, False, dict(per_group=55401.0, slice_sum=54.4, fused=71.0, native=22.3)),  # -> native
    ('sweep-c64', 'conv1d', (1, 64, 21), (64, 1, 3), 1, False, dict(per_group=2200.1, slice_sum=69.0, fused=71.2, native=23.7)),  # -> native
    ('sweep-c128', 'conv1d', (1, 128, 21), (128, 1, 3), 1, False, dict(per_group=4868.9, slice_sum=77.3, fused=84.6, native=33.9)),  # -> native
    ('sweep-c256', 'conv1d', (1, 256, 21), (256, 1, 3), 1, False, dict(per_group=10954.2, slice_sum=82.5, fused=88.0, native=35.0)),  # -> native
    ('sweep-c512', 'conv1d', (1, 512, 21), (512, 1, 3), 1, False, dict(per_group=15076.4, slice_sum=59.7, fused=62.3, native=25.5)),  # -> native
    ('sweep-c1024', 'conv1d', (1, 1024, 21), (1024, 1, 3), 1, False, dict(per_group=41187.3, slice_sum=79.5, fused=88.6, native=32.6)),  # -> native
    ('sweep-c4096', 'conv1d', (1, 4096, 21), (4096, 1, 3), 1, False, dict(per_group=171524.9, slice_sum=76.0, fused=87.1, native=34.2)),  # -> native
    ('lfm2-350m-prefill-1x128', 'conv1d', (1, 1024, 128), (1024, 1, 3), 1, False, dict(per_group=39535.2, slice_sum=120.5, fused=94.0, native=72.9)),  # -> native
    ('lfm2-350m-prefill-8x512', 'conv1d', (8, 1024, 512), (1024, 1, 3), 1, False, dict(per_group=63169.7, slice_sum=125.0, compiled=141.9, fused=93.3, native=77.4)),  # -> native
    ('lfm2-2.6b-short-1x19', 'conv1d', (1, 2048, 19), (2048, 1, 3), 1, False, dict(per_group=87291.4, slice_sum=135.9, fused=104.3, native=82.3)),  # -> native
    ('lfm3-1.7b-prefill-1x128', 'conv1d', (1, 2048, 128), (2048, 1, 7), 1, False, dict(per_group=75092.8, slice_sum=201.9, fused=89.6, native=72.9)),  # -> native
    ('lfm3-1.7b-prefill-8x512', 'conv1d', (8, 2048, 512), (2048, 1, 7), 1, False, dict(per_group=127063.6, slice_sum=287.1, compiled=159.4, fused=110.9, native=149.6)),  # -> fused
    ('decode-16x2048', 'decode', (16, 2048), (2048, 1, 3), 1, False, dict(per_group=110637.0, slice_sum=145.1, fused=83.9, native=103.1)),  # -> fused
    ('decode-16x2048-k7', 'decode', (16, 2048), (2048, 1, 7), 1, False, dict(per_group=111140.0, slice_sum=253.7, fused=91.5, native=117.0)),  # -> fused
    ('shortconv-long-1x4096x4096', 'conv1d', (1, 4096, 4096), (4096, 1, 4), 1, False, dict(per_group=142896.7, slice_sum=327.0, compiled=114.3, fused=88.0, native=246.1)),  # -> fused
    ('conformer-k31-8x256x512', 'conv1d', (8, 256, 512), (256, 1, 31), 1, False, dict(per_group=11347.4, slice_sum=469.4, fused=74.1, native=25.2)),  # -> native
    ('mbv2-b1-c32@112-cl', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=1413.1, slice_sum=184.9, fused=69.1, native=23.7)),  # -> native
    ('mbv2-b1-c96@112-s2-cl', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=5821.4, slice_sum=270.6, fused=113.1, native=36.0)),  # -> native
    ('mbv2-b1-c144@56-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=8400.8, slice_sum=258.8, fused=108.3, native=26.2)),  # -> native
    ('mbv2-b1-c144@56-s2-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=8764.1, slice_sum=272.0, fused=106.0, native=36.3)),  # -> native
    ('mbv2-b1-c192@28-cl', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=11630.5, slice_sum=269.4, fused=110.5, native=37.3)),  # -> native
    ('mbv2-b1-c384@14-cl', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=13992.7, slice_sum=160.4, fused=66.2, native=23.1)),  # -> native
    ('mbv2-b1-c576@14-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=22167.9, slice_sum=176.6, fused=67.8, native=22.7)),  # -> native
    ('mbv2-b1-c576@14-s2-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=20061.4, slice_sum=162.6, fused=64.9, native=23.4)),  # -> native
    ('mbv2-b1-c960@7-cl', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=47809.2, slice_sum=201.6, fused=74.4, native=33.8)),  # -> native
    ('mbv2-b8-c32@112-cl', 'conv2d', (8, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=2114.4, slice_sum=222.4, fused=110.6, native=40.6)),  # -> native
    ('mbv2-b8-c96@112-s2-cl', 'conv2d', (8, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=6357.2, slice_sum=282.3, compiled=144.2, fused=110.6, native=22.0)),  # -> native
    ('mbv2-b8-c144@56-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=7892.7, slice_sum=224.2, fused=99.9, native=33.1)),  # -> native
    ('mbv2-b8-c144@56-s2-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=6491.2, slice_sum=196.3, fused=77.3, native=22.2)),  # -> native
    ('mbv2-b8-c192@28-cl', 'conv2d', (8, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=6918.4, slice_sum=167.7, fused=69.1, native=31.8)),  # -> native
    ('mbv2-b8-c384@14-cl', 'conv2d', (8, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=13896.9, slice_sum=173.0, fused=69.8, native=23.9)),  # -> native
    ('mbv2-b8-c576@14-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=27443.6, slice_sum=204.9, fused=78.9, native=33.5)),  # -> native
    ('mbv2-b8-c576@14-s2-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=37034.3, slice_sum=292.7, fused=125.3, native=29.3)),  # -> native
    ('mbv2-b8-c960@7-cl', 'conv2d', (8, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=38269.4, slice_sum=220.2, fused=103.4, native=37.2)),  # -> native
    ('mbv2-b32-c32@112-cl', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=2579.9, slice_sum=533.6, compiled=146.4, fused=121.7, native=44.8)),  # -> native
    ('mbv2-b32-c96@112-s2-cl', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=5963.3, slice_sum=526.0, compiled=149.7, fused=114.7, native=53.4)),  # -> native
    ('mbv2-b32-c144@56-cl', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=7443.6, slice_sum=592.5, compiled=106.3, fused=72.9, native=45.5)),  # -> native
    ('mbv2-b32-c144@56-s2-cl', 'conv2d', (32, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=8380.4, slice_sum=271.9, compiled=105.4, fused=86.9, native=27.9)),  # -> native
    ('mbv2-b32-c192@28-cl', 'conv2d', (32, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=12063.0, slice_sum=266.8, compiled=126.4, fused=107.3, native=36.1)),  # -> native
    ('mbv2-b32-c384@14-cl', 'conv2d', (32, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=24296.5, slice_sum=274.8, fused=115.8, native=38.6)),  # -> native
)
# fmt: on


# ---------------------------------------------------------------- measured CUDA numbers, direct launch
# Copied from benchmarks/results/h200-2026-12-04-2/ops-h200.json by `python benchmarks/ops.py
# --auto-table benchmarks/results/h200-2026-12-04-2/ops-h200.json` (the second H200 run, gpu.sh at
# commit 8c10e92: NVIDIA H200, driver 580.159, torch 2.11, Triton 3.6, float32, wall clock of eager
# calls, device-synchronised): median us per call through the public op, with the direct launch
# on (DWSERVE_TRITON_DIRECT_LAUNCH=1, now the default: fused calls replay call-site Plans through
# Triton's C launcher). 36 of the suite's 62 rows: the step's budget ran out before the 18 NCHW
# conv2d rows, the last 7 batch-32 channels_last layers and convnext's 7x7; `compiled` timed on
# two big shapes only. The same JSON's device_us (graph replay: the kernels without the host) is
# quoted beside the rule in auto.py; the bf16 run beside it (ops-h200-bfloat16.json, the 16 conv1d
# and decode shapes) is checked against the rule too (tests/test_auto.py).
# fmt: off
CUDA_MEASURED_DIRECT: tuple = (
    ('seed-c2048', 'conv1d', (1, 2048, 21), (2048, 1, 3), 1, False, dict(per_group=52007.3, slice_sum=50.4, fused=22.7, native=20.8)),  # -> native
    ('sweep-c64', 'conv1d', (1, 64, 21), (64, 1, 3), 1, False, dict(per_group=2663.0, slice_sum=71.9, fused=32.7, native=31.3)),  # -> native
    ('sweep-c128', 'conv1d', (1, 128, 21), (128, 1, 3), 1, False, dict(per_group=5255.2, slice_sum=76.4, fused=33.5, native=32.7)),  # -> native
    ('sweep-c256', 'conv1d', (1, 256, 21), (256, 1, 3), 1, False, dict(per_group=10075.7, slice_sum=70.2, fused=31.9, native=30.7)),  # -> native
    ('sweep-c512', 'conv1d', (1, 512, 21), (512, 1, 3), 1, False, dict(per_group=21838.4, slice_sum=77.6, fused=33.4, native=34.1)),  # -> fused
    ('sweep-c1024', 'conv1d', (1, 1024, 21), (1024, 1, 3), 1, False, dict(per_group=45533.2, slice_sum=86.9, fused=38.2, native=36.8)),  # -> native
    ('sweep-c4096', 'conv1d', (1, 4096, 21), (4096, 1, 3), 1, False, dict(per_group=139819.5, slice_sum=79.1, fused=35.1, native=34.5)),  # -> native
    ('lfm2-350m-prefill-1x128', 'conv1d', (1, 1024, 128), (1024, 1, 3), 1, False, dict(per_group=34181.5, slice_sum=115.7, fused=35.3, native=72.6)),  # -> fused
    ('lfm2-350m-prefill-8x512', 'conv1d', (8, 1024, 512), (1024, 1, 3), 1, False, dict(per_group=42871.2, slice_sum=76.1, fused=21.4, native=64.5)),  # -> fused
    ('lfm2-2.6b-short-1x19', 'conv1d', (1, 2048, 19), (2048, 1, 3), 1, False, dict(per_group=90212.0, slice_sum=139.9, fused=39.2, native=83.8)),  # -> fused
    ('lfm3-1.7b-prefill-1x128', 'conv1d', (1, 2048, 128), (2048, 1, 7), 1, False, dict(per_group=89064.1, slice_sum=232.2, fused=40.6, native=80.8)),  # -> fused
    ('lfm3-1.7b-prefill-8x512', 'conv1d', (8, 2048, 512), (2048, 1, 7), 1, False, dict(per_group=137030.0, slice_sum=282.6, fused=38.8, native=144.5)),  # -> fused
    ('decode-16x2048', 'decode', (16, 2048), (2048, 1, 3), 1, False, dict(per_group=92882.2, slice_sum=107.7, fused=28.1, native=72.7)),  # -> fused
    ('decode-16x2048-k7', 'decode', (16, 2048), (2048, 1, 7), 1, False, dict(per_group=116860.9, slice_sum=221.2, fused=40.3, native=97.9)),  # -> fused
    ('shortconv-long-1x4096x4096', 'conv1d', (1, 4096, 4096), (4096, 1, 4), 1, False, dict(per_group=155402.4, slice_sum=319.1, compiled=124.4, fused=45.7, native=245.0)),  # -> fused
    ('conformer-k31-8x256x512', 'conv1d', (8, 256, 512), (256, 1, 31), 1, False, dict(per_group=14391.1, slice_sum=579.5, fused=32.4, native=29.6)),  # -> native
    ('mbv2-b1-c32@112-cl', 'conv2d', (1, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=2172.4, slice_sum=298.5, fused=43.3, native=35.5)),  # -> native
    ('mbv2-b1-c96@112-s2-cl', 'conv2d', (1, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=3748.1, slice_sum=204.0, fused=24.4, native=22.2)),  # -> native
    ('mbv2-b1-c144@56-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=5734.4, slice_sum=161.8, fused=26.1, native=23.3)),  # -> native
    ('mbv2-b1-c144@56-s2-cl', 'conv2d', (1, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=5989.6, slice_sum=196.3, fused=25.2, native=23.9)),  # -> native
    ('mbv2-b1-c192@28-cl', 'conv2d', (1, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=10389.0, slice_sum=242.1, fused=36.5, native=35.0)),  # -> native
    ('mbv2-b1-c384@14-cl', 'conv2d', (1, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=14349.0, slice_sum=168.2, fused=24.4, native=23.2)),  # -> native
    ('mbv2-b1-c576@14-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=22579.4, slice_sum=172.5, fused=25.6, native=23.8)),  # -> native
    ('mbv2-b1-c576@14-s2-cl', 'conv2d', (1, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=24864.6, slice_sum=169.3, fused=26.0, native=25.1)),  # -> native
    ('mbv2-b1-c960@7-cl', 'conv2d', (1, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=38946.9, slice_sum=165.1, fused=23.8, native=22.3)),  # -> native
    ('mbv2-b8-c32@112-cl', 'conv2d', (8, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=1493.3, slice_sum=173.0, fused=29.7, native=25.5)),  # -> native
    ('mbv2-b8-c96@112-s2-cl', 'conv2d', (8, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=6531.6, slice_sum=285.4, fused=45.5, native=41.5)),  # -> native
    ('mbv2-b8-c144@56-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 1, True, dict(per_group=5322.9, slice_sum=163.5, fused=24.3, native=22.1)),  # -> native
    ('mbv2-b8-c144@56-s2-cl', 'conv2d', (8, 144, 56, 56), (144, 1, 3, 3), 2, True, dict(per_group=5374.5, slice_sum=164.7, fused=25.1, native=23.3)),  # -> native
    ('mbv2-b8-c192@28-cl', 'conv2d', (8, 192, 28, 28), (192, 1, 3, 3), 1, True, dict(per_group=7075.2, slice_sum=164.1, fused=23.8, native=21.8)),  # -> native
    ('mbv2-b8-c384@14-cl', 'conv2d', (8, 384, 14, 14), (384, 1, 3, 3), 1, True, dict(per_group=13715.4, slice_sum=163.4, fused=24.1, native=22.6)),  # -> native
    ('mbv2-b8-c576@14-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 1, True, dict(per_group=21522.3, slice_sum=188.4, fused=25.5, native=23.9)),  # -> native
    ('mbv2-b8-c576@14-s2-cl', 'conv2d', (8, 576, 14, 14), (576, 1, 3, 3), 2, True, dict(per_group=32395.6, slice_sum=259.8, fused=41.5, native=37.6)),  # -> native
    ('mbv2-b8-c960@7-cl', 'conv2d', (8, 960, 7, 7), (960, 1, 3, 3), 1, True, dict(per_group=56484.8, slice_sum=177.7, fused=37.8, native=36.4)),  # -> native
    ('mbv2-b32-c32@112-cl', 'conv2d', (32, 32, 112, 112), (32, 1, 3, 3), 1, True, dict(per_group=1866.3, slice_sum=523.7, fused=41.9, native=41.4)),  # -> native
    ('mbv2-b32-c96@112-s2-cl', 'conv2d', (32, 96, 112, 112), (96, 1, 3, 3), 2, True, dict(per_group=4841.6, slice_sum=519.0, compiled=98.6, fused=59.1, native=51.4)),  # -> native
)
# fmt: on


# ---------------------------------------------------------------- measured in CUDA graphs (H200)
# Copied from benchmarks/results/h200-2026-12-04-2/nhwc-h200.json (benchmarks/gpu_nhwc.py, now gpu_strips.py: NVIDIA
# H200, torch 2.11, Triton 3.6, the strip kernel on): device us per call from CUDA-graph replays,
# cuDNN (native) against fused, on every channels_last MobileNetV2 depthwise layer (3x3, padding 1,
# weight (C, 1, 3, 3)). Rows: (shape name, dtype, x, stride, {impl: device us}). What auto's rule
# inside CUDA graphs goes by: a replay pays no host time.
# fmt: off
CUDA_GRAPHED_MEASURED: tuple = (
    ('mbv2-b1-c32@112-cl', 'float32', (1, 32, 112, 112), 1, dict(native=2.48, fused=2.99)),
    ('mbv2-b1-c96@112-s2-cl', 'float32', (1, 96, 112, 112), 2, dict(native=3.99, fused=3.68)),
    ('mbv2-b1-c144@56-cl', 'float32', (1, 144, 56, 56), 1, dict(native=3.25, fused=3.76)),
    ('mbv2-b1-c144@56-s2-cl', 'float32', (1, 144, 56, 56), 2, dict(native=2.36, fused=3.67)),
    ('mbv2-b1-c192@28-cl', 'float32', (1, 192, 28, 28), 1, dict(native=2.24, fused=2.49)),
    ('mbv2-b1-c384@14-cl', 'float32', (1, 384, 14, 14), 1, dict(native=1.92, fused=2.23)),
    ('mbv2-b1-c576@14-cl', 'float32', (1, 576, 14, 14), 1, dict(native=1.99, fused=2.24)),
    ('mbv2-b1-c576@14-s2-cl', 'float32', (1, 576, 14, 14), 2, dict(native=2.01, fused=1.95)),
    ('mbv2-b1-c960@7-cl', 'float32', (1, 960, 7, 7), 1, dict(native=1.88, fused=2.18)),
    ('mbv2-b8-c32@112-cl', 'float32', (8, 32, 112, 112), 1, dict(native=9.76, fused=10.14)),
    ('mbv2-b8-c96@112-s2-cl', 'float32', (8, 96, 112, 112), 2, dict(native=13.82, fused=14.35)),
    ('mbv2-b8-c144@56-cl', 'float32', (8, 144, 56, 56), 1, dict(native=11.12, fused=11.62)),
    ('mbv2-b8-c144@56-s2-cl', 'float32', (8, 144, 56, 56), 2, dict(native=6.66, fused=6.75)),
    ('mbv2-b8-c192@28-cl', 'float32', (8, 192, 28, 28), 1, dict(native=5.32, fused=5.15)),
    ('mbv2-b8-c384@14-cl', 'float32', (8, 384, 14, 14), 1, dict(native=3.65, fused=3.78)),
    ('mbv2-b8-c576@14-cl', 'float32', (8, 576, 14, 14), 1, dict(native=4.73, fused=4.44)),
    ('mbv2-b8-c576@14-s2-cl', 'float32', (8, 576, 14, 14), 2, dict(native=3.66, fused=3.42)),
    ('mbv2-b8-c960@7-cl', 'float32', (8, 960, 7, 7), 1, dict(native=2.97, fused=2.54)),
    ('mbv2-b32-c32@112-cl', 'float32', (32, 32, 112, 112), 1, dict(native=35.16, fused=33.11)),
    ('mbv2-b32-c96@112-s2-cl', 'float32', (32, 96, 112, 112), 2, dict(native=47.26, fused=49.5)),
    ('mbv2-b32-c144@56-cl', 'float32', (32, 144, 56, 56), 1, dict(native=41.18, fused=40.31)),
    ('mbv2-b32-c144@56-s2-cl', 'float32', (32, 144, 56, 56), 2, dict(native=19.98, fused=21.38)),
    ('mbv2-b32-c192@28-cl', 'float32', (32, 192, 28, 28), 1, dict(native=14.47, fused=13.79)),
    ('mbv2-b32-c384@14-cl', 'float32', (32, 384, 14, 14), 1, dict(native=8.28, fused=7.58)),
    ('mbv2-b32-c576@14-cl', 'float32', (32, 576, 14, 14), 1, dict(native=11.3, fused=10.17)),
    ('mbv2-b32-c576@14-s2-cl', 'float32', (32, 576, 14, 14), 2, dict(native=6.79, fused=7.23)),
    ('mbv2-b32-c960@7-cl', 'float32', (32, 960, 7, 7), 1, dict(native=7.08, fused=6.48)),
    ('mbv2-b1-c32@112-cl', 'bfloat16', (1, 32, 112, 112), 1, dict(native=3.02, fused=2.43)),
    ('mbv2-b1-c96@112-s2-cl', 'bfloat16', (1, 96, 112, 112), 2, dict(native=5.91, fused=3.4)),
    ('mbv2-b1-c144@56-cl', 'bfloat16', (1, 144, 56, 56), 1, dict(native=3.54, fused=3.64)),
    ('mbv2-b1-c144@56-s2-cl', 'bfloat16', (1, 144, 56, 56), 2, dict(native=3.72, fused=2.04)),
    ('mbv2-b1-c192@28-cl', 'bfloat16', (1, 192, 28, 28), 1, dict(native=2.78, fused=2.23)),
    ('mbv2-b1-c384@14-cl', 'bfloat16', (1, 384, 14, 14), 1, dict(native=2.61, fused=1.87)),
    ('mbv2-b1-c576@14-cl', 'bfloat16', (1, 576, 14, 14), 1, dict(native=2.74, fused=1.86)),
    ('mbv2-b1-c576@14-s2-cl', 'bfloat16', (1, 576, 14, 14), 2, dict(native=3.34, fused=1.95)),
    ('mbv2-b1-c960@7-cl', 'bfloat16', (1, 960, 7, 7), 1, dict(native=2.66, fused=1.83)),
    ('mbv2-b8-c32@112-cl', 'bfloat16', (8, 32, 112, 112), 1, dict(native=9.04, fused=7.36)),
    ('mbv2-b8-c96@112-s2-cl', 'bfloat16', (8, 96, 112, 112), 2, dict(native=12.71, fused=8.81)),
    ('mbv2-b8-c144@56-cl', 'bfloat16', (8, 144, 56, 56), 1, dict(native=9.53, fused=8.77)),
    ('mbv2-b8-c144@56-s2-cl', 'bfloat16', (8, 144, 56, 56), 2, dict(native=10.44, fused=4.81)),
    ('mbv2-b8-c192@28-cl', 'bfloat16', (8, 192, 28, 28), 1, dict(native=7.71, fused=3.84)),
    ('mbv2-b8-c384@14-cl', 'bfloat16', (8, 384, 14, 14), 1, dict(native=5.67, fused=2.64)),
    ('mbv2-b8-c576@14-cl', 'bfloat16', (8, 576, 14, 14), 1, dict(native=6.99, fused=3.2)),
    ('mbv2-b8-c576@14-s2-cl', 'bfloat16', (8, 576, 14, 14), 2, dict(native=6.48, fused=2.47)),
    ('mbv2-b8-c960@7-cl', 'bfloat16', (8, 960, 7, 7), 1, dict(native=4.56, fused=2.37)),
    ('mbv2-b32-c32@112-cl', 'bfloat16', (32, 32, 112, 112), 1, dict(native=25.82, fused=24.03)),
    ('mbv2-b32-c96@112-s2-cl', 'bfloat16', (32, 96, 112, 112), 2, dict(native=37.72, fused=31.55)),
    ('mbv2-b32-c144@56-cl', 'bfloat16', (32, 144, 56, 56), 1, dict(native=30.78, fused=29.08)),
    ('mbv2-b32-c144@56-s2-cl', 'bfloat16', (32, 144, 56, 56), 2, dict(native=19.5, fused=14.16)),
    ('mbv2-b32-c192@28-cl', 'bfloat16', (32, 192, 28, 28), 1, dict(native=12.78, fused=9.48)),
    ('mbv2-b32-c384@14-cl', 'bfloat16', (32, 384, 14, 14), 1, dict(native=8.64, fused=6.74)),
    ('mbv2-b32-c576@14-cl', 'bfloat16', (32, 576, 14, 14), 1, dict(native=9.81, fused=8.54)),
    ('mbv2-b32-c576@14-s2-cl', 'bfloat16', (32, 576, 14, 14), 2, dict(native=9.23, fused=4.61)),
    ('mbv2-b32-c960@7-cl', 'bfloat16', (32, 960, 7, 7), 1, dict(native=6.85, fused=4.71)),
)
# fmt: on
