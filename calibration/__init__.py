"""Adapting brainstream to one person: RSVP protocol and presenter, recording, few-shot adaptation of a
pretrained multi-subject encoder, calibration report and subject profile (``brainstream calibrate``)."""
