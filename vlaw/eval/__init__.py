"""Evaluation: video metrics of world-model frames (PSNR, SSIM, LPIPS, FID, FVD:
video_metrics.py and its feature networks), the world model's held-out prediction check
(prediction.py), confusion matrices of success decisions (confusion.py), and success rates with
Wilson intervals (success.py)."""
