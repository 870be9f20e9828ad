"""Speed benchmark of training, inference and evaluation (`sadetr bench`)."""
