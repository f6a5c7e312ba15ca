package main

import (
	"context"
	"fmt"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/console/web"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	key, err := web.SessionKey(cfg.SessionKeyFile)
	if err != nil {
		return fmt.Errorf("%w: %w", service.ErrInvalidOption, err)
	}
	sessions, err := web.NewSessions(key, cfg.SessionTTL, cfg.SecureCookies())
	if err != nil {
		return err
	}
	// The provider is asked at the first sign-in, not now: it may be down while bearer tokens work.
	var sso *web.OIDC
	if cfg.OIDC.IssuerURL != "" {
		oc, err := cfg.OIDC.Web()
		if err != nil {
			return fmt.Errorf("%w: %w", service.ErrInvalidOption, err)
		}
		if sso, err = web.NewOIDC(oc); err != nil {
			return fmt.Errorf("%w: %w", service.ErrInvalidOption, err)
		}
	}
	// The console's own identity reviews tokens and access and reads the destinations' names;
	// everything a user sees or changes goes through that user's token. On NATS it is the
	// watcher: status events only.
	rt, err := service.Connect(ctx, cfg.Common, bus.IdentityWatcher, service.WithName("console"))
	if err != nil {
		return err
	}
	defer rt.Close()
	if cfg.SessionKeyFile == "" {
		rt.Log.Warn("no --session-key-file: sessions are sealed with a random key and end when this process does; replicas " +
			"do not share them")
	}
	users, err := web.UserClientsOf(rt.REST)
	if err != nil {
		return err
	}
	hub := web.NewHub(cfg.EventBuffer, rt.Endpoint.Registry())
	if _, err := hub.Subscribe(rt.NC); err != nil {
		return fmt.Errorf("subscribe to status events: %w", err)
	}
	srv := &web.Server{
		Log: rt.Log, Sessions: sessions, OIDC: sso, Auth: web.NewAuthenticator(rt.Clientset, cfg.AccessTTL), Users: users,
		Destinations: rt.Destinations(rt.Kube).Names, Hub: hub,
	}
	h, err := srv.Handler(rt.Endpoint.Registry())
	if err != nil {
		return err
	}
	serve, err := web.Listen(cfg.Listen, cfg.TLSCert, cfg.TLSKey, h, rt.Log)
	if err != nil {
		return err
	}
	return rt.Run(ctx, serve)
}
