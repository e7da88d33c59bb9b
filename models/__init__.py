"""Everything that computes: depthwise ops, the LFM2 and MobileNetV2 models, launch counting.

Never imports FastAPI; the service layer lives in `service`.
"""
