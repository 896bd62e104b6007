standard nasion coil position relative to dewar (cm):
	x = 5.65685
	y = 5.65685
	z = -27
standard left ear coil position relative to dewar (cm):
	x = -5.65685
	y = 5.65685
	z = -27
standard right ear coil position relative to dewar (cm):
	x = 5.65685
	y = -5.65685
	z = -27
measured nasion coil position relative to dewar (cm):
	x = 6.72107
	y = 6.5033
	z = -27.7205
measured left ear coil position relative to dewar (cm):
	x = -6.88573
	y = 4.21237
	z = -25.8999
measured right ear coil position relative to dewar (cm):
	x = 3.74269
	y = -7.63012
	z = -26.3512
measured nasion coil position relative to head (cm):
	x = 11.7793
	y = 0
	z = 0
measured left ear coil position relative to head (cm):
	x = 0.356369
	y = 7.95147
	z = 0
measured right ear coil position relative to head (cm):
	x = -0.356369
	y = -7.95147
	z = 0

