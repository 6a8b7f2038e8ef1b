"""Speech to text, for scoring: offline Whisper ASR and the WER / answer matcher that training and
eval share. Never on the path from speech in to speech out. Imports only s2s.io."""
