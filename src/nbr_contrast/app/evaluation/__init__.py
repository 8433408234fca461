"""Offline evaluation tasks: kNN, linear and fine-tuning heads, export, reports and plots."""
