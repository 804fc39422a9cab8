"""The feature networks of the video metrics (vlaw.eval.video_metrics), as Flax modules:
LPIPS's AlexNet/VGG16 trunk and linear heads (lpips_net.py), Inception-v3 to FID's pool3
features (inception.py) and I3D's Kinetics-400 logits for FVD (i3d.py). Converters for their
published weights: vlaw.convert.metric_nets."""
