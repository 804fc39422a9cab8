"""Evaluation: video metrics of world-model frames (PSNR, SSIM, LPIPS, FID, FVD:
video_metrics.py and its feature networks), the world model's held-out prediction check
(prediction.py), action replay and the event confusion of Table 1 (action_replay.py), the
world model as a policy evaluator (policy_ranking.py), confusion matrices of success decisions
(confusion.py), success rates with Wilson intervals (success.py), and the HTML report
(report.py, with its SVG charts.py and PNG images.py)."""
