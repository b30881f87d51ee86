"""RIFE v4 flow network (IFNet, every layout of 4.0-4.26: `layouts.py`), checkpoint loading and `interpolate`.

Written from `spec/ifnet-v4.md`. The fast path (no refinement network) is what RIFE 4.x ships:

    model = load_rife()                                    # bundled RIFE 4.0 weights, CPU
    out = model.interpolate(img0, img1, timestep=0.5)      # (N,3,H,W) floats in [0, 1]
"""
